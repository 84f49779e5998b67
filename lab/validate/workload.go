package validate

import (
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Deployment mirrors Kubernetes' ValidateDeployment: the pod template by the pod rules under
// spec.template.spec, and the rollout fields the controller reads.
func Deployment(d *appsv1.Deployment) field.ErrorList {
	p := field.NewPath("spec")
	errs := meta(&d.ObjectMeta, field.NewPath("metadata"))
	errs = append(errs, replicas(d.Spec.Replicas, p.Child("replicas"))...)
	errs = append(errs, selected(d.Spec.Selector, &d.Spec.Template, p)...)
	errs = append(errs, nonNegative(int64(d.Spec.MinReadySeconds), p.Child("minReadySeconds"))...)
	if r := d.Spec.RevisionHistoryLimit; r != nil {
		errs = append(errs, nonNegative(int64(*r), p.Child("revisionHistoryLimit"))...)
	}
	if pd := d.Spec.ProgressDeadlineSeconds; pd != nil {
		errs = append(errs, nonNegative(int64(*pd), p.Child("progressDeadlineSeconds"))...)
		if *pd <= d.Spec.MinReadySeconds {
			errs = append(errs, field.Invalid(p.Child("progressDeadlineSeconds"), *pd, "must be greater than minReadySeconds"))
		}
	}
	return append(errs, strategy(&d.Spec.Strategy, p.Child("strategy"))...)
}

// ReplicaSet mirrors Kubernetes' ValidateReplicaSet.
func ReplicaSet(rs *appsv1.ReplicaSet) field.ErrorList {
	p := field.NewPath("spec")
	errs := meta(&rs.ObjectMeta, field.NewPath("metadata"))
	errs = append(errs, replicas(rs.Spec.Replicas, p.Child("replicas"))...)
	errs = append(errs, selected(rs.Spec.Selector, &rs.Spec.Template, p)...)
	return append(errs, nonNegative(int64(rs.Spec.MinReadySeconds), p.Child("minReadySeconds"))...)
}

func strategy(s *appsv1.DeploymentStrategy, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	switch s.Type {
	case appsv1.RecreateDeploymentStrategyType:
		if s.RollingUpdate != nil {
			errs = append(errs, field.Forbidden(p.Child("rollingUpdate"), "may not be specified when strategy `type` is 'Recreate'"))
		}
	case "", appsv1.RollingUpdateDeploymentStrategyType:
		ru := s.RollingUpdate
		if ru == nil {
			break
		}
		rp := p.Child("rollingUpdate")
		errs = append(errs, intOrPercent(ru.MaxUnavailable, rp.Child("maxUnavailable"))...)
		errs = append(errs, intOrPercent(ru.MaxSurge, rp.Child("maxSurge"))...)
		// Kubernetes defaults an unset one to 25% before it checks this.
		if ru.MaxUnavailable != nil && ru.MaxSurge != nil && isZero(ru.MaxUnavailable) && isZero(ru.MaxSurge) {
			errs = append(errs, field.Invalid(rp.Child("maxUnavailable"), ru.MaxUnavailable.String(), "may not be 0 when `maxSurge` is 0"))
		}
		if u := ru.MaxUnavailable; u != nil && u.Type == intstr.String && len(validation.IsValidPercent(u.StrVal)) == 0 {
			if v, _ := intstr.GetScaledValueFromIntOrPercent(u, 100, true); v > 100 {
				errs = append(errs, field.Invalid(rp.Child("maxUnavailable"), u.StrVal, "must not be greater than 100%"))
			}
		}
	default:
		errs = append(errs, field.NotSupported(p.Child("type"), s.Type, []string{"Recreate", "RollingUpdate"}))
	}
	return errs
}

// intOrPercent is Kubernetes' ValidatePositiveIntOrPercent.
func intOrPercent(v *intstr.IntOrString, p *field.Path) field.ErrorList {
	if v == nil {
		return nil
	}
	var errs field.ErrorList
	if v.Type == intstr.String {
		for _, msg := range validation.IsValidPercent(v.StrVal) {
			errs = append(errs, field.Invalid(p, v.StrVal, msg))
		}
		return errs
	}
	return nonNegative(int64(v.IntVal), p)
}

func isZero(v *intstr.IntOrString) bool {
	if v.Type == intstr.String {
		return strings.TrimLeft(strings.TrimSuffix(v.StrVal, "%"), "0") == ""
	}
	return v.IntVal == 0
}

func nonNegative(v int64, p *field.Path) field.ErrorList {
	if v < 0 {
		return field.ErrorList{field.Invalid(p, v, "must be greater than or equal to 0")}
	}
	return nil
}

// template checks what a controller's pod template may hold beyond a pod's rules: its pods are restarted
// in place, never left finished (Kubernetes: "supported values: Always").
func template(t *corev1.PodTemplateSpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	switch t.Spec.RestartPolicy {
	case "", corev1.RestartPolicyAlways:
	default:
		errs = append(errs, field.NotSupported(p.Child("spec", "restartPolicy"), t.Spec.RestartPolicy, []string{"Always"}))
	}
	for k := range t.Annotations {
		for _, msg := range validation.IsQualifiedName(strings.ToLower(k)) {
			errs = append(errs, field.Invalid(p.Child("metadata", "annotations"), k, msg))
		}
	}
	return errs
}
