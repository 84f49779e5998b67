package api

import (
	"encoding/json"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SpecOf is the desired state of an object as JSON, to tell a real change from a re-apply.
func SpecOf(o metav1.Object) string {
	data, _ := json.Marshal(o)
	var m map[string]json.RawMessage
	json.Unmarshal(data, &m)
	return string(m["spec"])
}
