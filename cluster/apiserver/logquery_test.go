package apiserver_test

import (
	corev1 "k8s.io/api/core/v1"
	"testing"
	"time"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/apiserver"
)

// The server asks a node for logs with the query kubectl sent: every
// option survives the trip.
func TestLogQueryRoundTrip(t *testing.T) {
	tail, limit := int64(3), int64(100)
	since := metav1.NewTime(time.Date(2026, 12, 6, 7, 0, 0, 0, time.UTC))
	for _, opts := range []corev1.PodLogOptions{
		{},
		{Container: "web", Follow: true, Previous: true, Timestamps: true, TailLines: &tail, LimitBytes: &limit, SinceTime: &since},
		{SinceSeconds: &tail},
	} {
		got, err := apiserver.ParseLogQuery(apiserver.LogQuery(opts))
		if err != nil || !apiequality.Semantic.DeepEqual(got, opts) {
			t.Errorf("%+v → %q → %+v, %v", opts, apiserver.LogQuery(opts).Encode(), got, err)
		}
	}
}
