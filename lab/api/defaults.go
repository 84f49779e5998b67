package api

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// DefaultPodSpec fills what Kubernetes' API server defaults in a pod spec. The API's admission and the
// controllers that make pods from templates both call it, so a pod reads the same however it was made.
// It is idempotent.
func DefaultPodSpec(s *corev1.PodSpec) {
	if s.RestartPolicy == "" {
		s.RestartPolicy = corev1.RestartPolicyAlways
	}
	if s.TerminationGracePeriodSeconds == nil {
		grace := int64(5)
		s.TerminationGracePeriodSeconds = &grace
	}
	if s.DNSPolicy == "" {
		s.DNSPolicy = corev1.DNSClusterFirst
	}
	for i := range s.Containers {
		c := &s.Containers[i]
		if c.ImagePullPolicy == "" {
			c.ImagePullPolicy = corev1.PullIfNotPresent
		}
		if c.TerminationMessagePath == "" {
			c.TerminationMessagePath = corev1.TerminationMessagePathDefault
		}
		if c.TerminationMessagePolicy == "" {
			c.TerminationMessagePolicy = corev1.TerminationMessageReadFile
		}
		for j := range c.Ports {
			if c.Ports[j].Protocol == "" {
				c.Ports[j].Protocol = corev1.ProtocolTCP
			}
		}
		for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
			if p == nil {
				continue
			}
			if p.PeriodSeconds == 0 {
				p.PeriodSeconds = 10
			}
			if p.TimeoutSeconds == 0 {
				p.TimeoutSeconds = 1
			}
			if p.SuccessThreshold == 0 {
				p.SuccessThreshold = 1
			}
			if p.FailureThreshold == 0 {
				p.FailureThreshold = 3
			}
			if p.HTTPGet != nil && p.HTTPGet.Path == "" {
				p.HTTPGet.Path = "/"
			}
			if p.HTTPGet != nil && p.HTTPGet.Scheme == "" {
				p.HTTPGet.Scheme = corev1.URISchemeHTTP
			}
		}
	}
}

// DefaultAccountMemoryQuota is an account's memory ceiling when its spec.memoryQuota is empty: room for
// eight pods of the default 512Mi size.
const DefaultAccountMemoryQuota = "4Gi"

// MinAccountCPUQuotaMilli and MinAccountMemoryQuota are the smallest ceilings an account may have: the
// kernel's smallest CFS quota (1ms of a 100ms period) and what one small container needs to start.
const (
	MinAccountCPUQuotaMilli = 10
	MinAccountMemoryQuota   = 16 << 20
)

// AccountCeilings are an account's CPU (millicores; 0: the machine's CPUs, no ceiling) and memory (bytes)
// ceilings from its spec, defaults filled in. The spec must have passed validation (lab/validate).
func AccountCeilings(s AccountSpec) (cpuMilli, memoryBytes int64, err error) {
	if s.CPUQuota != "" {
		q, err := resource.ParseQuantity(s.CPUQuota)
		if err != nil {
			return 0, 0, fmt.Errorf("spec.cpuQuota %q: %w", s.CPUQuota, err)
		}
		cpuMilli = q.MilliValue()
	}
	mem := s.MemoryQuota
	if mem == "" {
		mem = DefaultAccountMemoryQuota
	}
	q, err := resource.ParseQuantity(mem)
	if err != nil {
		return 0, 0, fmt.Errorf("spec.memoryQuota %q: %w", mem, err)
	}
	return cpuMilli, q.Value(), nil
}
