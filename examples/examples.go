// Package examples holds ready GitOps repositories: `flotilla up` seeds its
// repository from Hello when it is given none, and the tests run them.
package examples

import (
	"embed"
	"io/fs"
)

//go:embed hello
var files embed.FS

// Hello is the examples/hello repository: a ConfigMap and a Deployment of
// busybox httpd on the image `make image` builds.
func Hello() fs.FS {
	sub, err := fs.Sub(files, "hello")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return sub
}

// HelloImage is the image the hello example runs.
const HelloImage = "localhost/busybox:latest"
