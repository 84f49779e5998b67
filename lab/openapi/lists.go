package openapi

import (
	"github.com/pilab/pi/lab/api"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// FloatingIPList and AccountList are the shapes the lab's list responses of pilab's kinds have (lab/server
// answers with its own types of the same JSON; those carry runtime.Object methods, these carry the docs):
// openapi-gen needs Go types to describe them, and lab/api holds no list types.

// FloatingIPList is a list of Floating IPs.
// +k8s:openapi-gen=true
type FloatingIPList struct {
	metav1.TypeMeta `json:",inline"`
	// Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items is the list of Floating IPs.
	Items []api.FloatingIP `json:"items"`
}

// AccountList is a list of accounts.
// +k8s:openapi-gen=true
type AccountList struct {
	metav1.TypeMeta `json:",inline"`
	// Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items is the list of accounts.
	Items []api.Account `json:"items"`
}
