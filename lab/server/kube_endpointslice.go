package server

import (
	"crypto/sha256"
	"fmt"
	"strings"

	"github.com/pilab/pi/lab/printers"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// EndpointSlices are served as a read-only view of each Service's Endpoints, which pilab's Service
// controller keeps and the load balancer reads: one slice per subset (a set of addresses sharing one
// port list), as kube's EndpointSliceMirroring controller makes them from Endpoints. kubectl describe
// service and other clients read slices, not Endpoints; keeping one source of truth means the two never
// disagree.

const (
	// serviceNameLabel and managedByLabel are the labels kube's controllers put on every slice.
	serviceNameLabel = discoveryv1.LabelServiceName
	managedByLabel   = discoveryv1.LabelManagedBy
	managedBy        = "endpoints.pilab.dev"
)

// sliceNameAlphabet is the alphabet of the random suffix apiserver's generateName uses (no vowels).
const sliceNameAlphabet = "bcdfghjklmnpqrstvwxz2456789"

// endpointSliceName is slice i of ep: "<service>-<5 characters>", stable for the Endpoints object's life
// (made from its UID), so a watcher sees the same slice modified rather than replaced.
func endpointSliceName(ep *corev1.Endpoints, i int) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s/%d", ep.UID, i))
	var b strings.Builder
	for _, c := range sum[:5] {
		b.WriteByte(sliceNameAlphabet[int(c)%len(sliceNameAlphabet)])
	}
	return ep.Name + "-" + b.String()
}

// endpointSlicesOf projects one stored Endpoints object onto its slices. A Service with no endpoints
// still has one, empty slice, as kube's controller keeps.
func endpointSlicesOf(o metav1.Object) []metav1.Object {
	ep, ok := o.(*corev1.Endpoints)
	if !ok {
		return nil
	}
	subsets := ep.Subsets
	if len(subsets) == 0 {
		subsets = []corev1.EndpointSubset{{}}
	}
	out := make([]metav1.Object, 0, len(subsets))
	for i, ss := range subsets {
		s := &discoveryv1.EndpointSlice{
			TypeMeta: metav1.TypeMeta{APIVersion: discoveryv1.SchemeGroupVersion.String(), Kind: "EndpointSlice"},
			ObjectMeta: metav1.ObjectMeta{Name: endpointSliceName(ep, i), Namespace: ep.Namespace,
				UID: types.UID(fmt.Sprintf("%s-slice%d", ep.UID, i)), ResourceVersion: ep.ResourceVersion, Generation: 1,
				CreationTimestamp: ep.CreationTimestamp, DeletionTimestamp: ep.DeletionTimestamp,
				Labels: map[string]string{serviceNameLabel: ep.Name, managedByLabel: managedBy}},
			AddressType: discoveryv1.AddressTypeIPv4,
		}
		for k, v := range ep.Labels {
			if _, set := s.Labels[k]; !set {
				s.Labels[k] = v
			}
		}
		add := func(a corev1.EndpointAddress, ready bool) {
			e := discoveryv1.Endpoint{Addresses: []string{a.IP}, TargetRef: a.TargetRef, NodeName: a.NodeName,
				Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &ready, Terminating: new(bool)}}
			if a.Hostname != "" {
				e.Hostname = &a.Hostname
			}
			s.Endpoints = append(s.Endpoints, e)
		}
		for _, a := range ss.Addresses {
			add(a, true)
		}
		for _, a := range ss.NotReadyAddresses {
			add(a, false)
		}
		for _, p := range ss.Ports {
			s.Ports = append(s.Ports, discoveryv1.EndpointPort{Name: &p.Name, Protocol: &p.Protocol, Port: &p.Port, AppProtocol: p.AppProtocol})
		}
		out = append(out, s)
	}
	return out
}

// endpointSliceCells are kubectl's columns for a slice: NAME ADDRESSTYPE PORTS ENDPOINTS AGE, with
// kube's formatting (at most 3 addresses, "+ N more...", "<unset>").
func endpointSliceCells(s *discoveryv1.EndpointSlice) []string {
	ports := "<unset>"
	if len(s.Ports) > 0 {
		var ps []string
		for _, p := range s.Ports {
			if p.Port == nil {
				ps = append(ps, "<unset>")
			} else {
				ps = append(ps, fmt.Sprint(*p.Port))
			}
		}
		ports = strings.Join(ps, ",")
	}
	var addrs []string
	for _, e := range s.Endpoints {
		addrs = append(addrs, e.Addresses...)
	}
	eps := "<unset>"
	switch {
	case len(addrs) > 3:
		eps = strings.Join(addrs[:3], ",") + fmt.Sprintf(" + %d more...", len(addrs)-3)
	case len(addrs) > 0:
		eps = strings.Join(addrs, ",")
	}
	return []string{s.Name, string(s.AddressType), ports, eps, printers.Age(s.CreationTimestamp)}
}

// projectedWriteError is the answer to a write of a projected (read-only) resource.
func projectedWriteError(res *resource, verb string) error {
	err := apierrors.NewMethodNotSupported(res.groupResource(), verb)
	err.ErrStatus.Message = fmt.Sprintf("%s are made by the lab from each Service's endpoints and cannot be changed through the API; change the Service or its pods", res.name)
	return err
}
