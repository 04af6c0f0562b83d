//go:build race

package store

// raceEnabled: the race detector slows byte loops (JSON of tens of MiB)
// tenfold; the tests of sizes alone skip under it.
const raceEnabled = true
