package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/client"
	"github.com/pilab/pi/lab/printers"
	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

var (
	kindDeployment, _ = api.LookupKind("Deployment")
	kindService, _    = api.LookupKind("Service")
)

func sameSpec(a, b metav1.Object) bool {
	spec := func(o metav1.Object) string {
		data, _ := json.Marshal(o)
		var m map[string]any
		json.Unmarshal(data, &m)
		out, _ := json.Marshal([]any{m["spec"], o.GetLabels()})
		return string(out)
	}
	return spec(a) == spec(b)
}

func newCreateDeploymentCmd() *cobra.Command {
	var image string
	var replicas, port int32
	cmd := &cobra.Command{
		Use:   "deployment NAME --image=IMAGE [--replicas=N] [--port=N] [-- COMMAND [ARG...]]",
		Short: "Create a deployment",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return fmt.Errorf("name the deployment: pi create deployment NAME --image=IMAGE")
			}
			if len(args) > 1 && cmd.ArgsLenAtDash() != 1 {
				return fmt.Errorf("one deployment name expected, got %q; a command for its containers goes after --", args)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			labels := map[string]string{"app": name}
			// As kubectl: what follows -- replaces the image's entrypoint.
			c := corev1.Container{Name: containerName(image), Image: image, Command: args[1:]}
			if port > 0 {
				c.Ports = []corev1.ContainerPort{{ContainerPort: port}}
			}
			dep := &appsv1.Deployment{
				ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
				Spec: appsv1.DeploymentSpec{
					Replicas: &replicas,
					Selector: &metav1.LabelSelector{MatchLabels: labels},
					Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{c}}},
				},
			}
			if _, err := g.client().Create(cmd.Context(), dep); err != nil {
				return err
			}
			fmt.Printf("deployment %q created\n", name)
			return nil
		},
	}
	cmd.Flags().StringVar(&image, "image", "", "the container image (required)")
	cmd.Flags().Int32Var(&replicas, "replicas", 1, "number of pods")
	cmd.Flags().Int32Var(&port, "port", 0, "the port the container exposes")
	cmd.MarkFlagRequired("image")
	return cmd
}

// containerName is kubectl's: the image's last path element without tag.
func containerName(image string) string {
	n := image[strings.LastIndex(image, "/")+1:]
	n, _, _ = strings.Cut(n, ":")
	n, _, _ = strings.Cut(n, "@")
	return n
}

// typeName splits "deployment/web" or ("deployment", "web").
func typeName(args []string) (string, string, error) {
	if kn, name, ok := strings.Cut(args[0], "/"); ok {
		return kn, name, nil
	}
	if len(args) < 2 {
		return "", "", fmt.Errorf("name a TYPE NAME or TYPE/NAME")
	}
	return args[0], args[1], nil
}

func getDeployment(ctx context.Context, args []string) (*appsv1.Deployment, error) {
	kn, name, err := typeName(args)
	if err != nil {
		return nil, err
	}
	k, err := lookupKind(kn)
	if err != nil {
		return nil, err
	}
	if k.Name != "Deployment" {
		return nil, fmt.Errorf("only deployments are supported here, not %s", k.Plural)
	}
	o, err := g.client().Get(ctx, k, name)
	if err != nil {
		return nil, err
	}
	return o.(*appsv1.Deployment), nil
}

func newScaleCmd() *cobra.Command {
	var replicas int32
	cmd := &cobra.Command{
		Use:   "scale deployment NAME --replicas=N",
		Short: "Set the number of pods of a deployment",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if replicas < 0 {
				return fmt.Errorf("--replicas must be 0 or more")
			}
			dep, err := getDeployment(cmd.Context(), args)
			if err != nil {
				return err
			}
			dep.Spec.Replicas = &replicas
			if _, err := g.client().Replace(cmd.Context(), dep); err != nil {
				return err
			}
			fmt.Printf("deployment %q scaled\n", dep.Name)
			return nil
		},
	}
	cmd.Flags().Int32Var(&replicas, "replicas", -1, "the new number of pods (required)")
	cmd.MarkFlagRequired("replicas")
	return cmd
}

type exposeOptions struct {
	port, targetPort string
	name, typ, lbIP  string
	protocol         string
}

func newExposeCmd() *cobra.Command {
	var o exposeOptions
	cmd := &cobra.Command{
		Use:   "expose (deployment|pod) NAME --port=N [--target-port=N] [--type=ClusterIP|LoadBalancer] [--load-balancer-ip=FIP]",
		Short: "Make a Service for the pods of a deployment or a pod",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kn, name, err := typeName(args)
			if err != nil {
				return err
			}
			k, err := lookupKind(kn)
			if err != nil {
				return err
			}
			obj, err := g.client().Get(cmd.Context(), k, name)
			if err != nil {
				return err
			}
			var selector map[string]string
			var ports []corev1.ContainerPort
			switch v := obj.(type) {
			case *appsv1.Deployment:
				selector = v.Spec.Selector.MatchLabels
				for _, c := range v.Spec.Template.Spec.Containers {
					ports = append(ports, c.Ports...)
				}
			case *corev1.Pod:
				selector = v.Labels
				for _, c := range v.Spec.Containers {
					ports = append(ports, c.Ports...)
				}
			default:
				return fmt.Errorf("cannot expose a %s; expose a deployment or a pod", k.Singular)
			}
			if len(selector) == 0 {
				return fmt.Errorf("%s %q has no labels to select its pods by", k.Singular, name)
			}
			port := o.port
			if port == "" {
				if len(ports) == 0 {
					return fmt.Errorf("couldn't find a port via --port or the %s's container ports", k.Singular)
				}
				port = fmt.Sprint(ports[0].ContainerPort)
			}
			var p int32
			if _, err := fmt.Sscan(port, &p); err != nil {
				return fmt.Errorf("--port %q must be a number", port)
			}
			tp := intstr.FromInt(int(p))
			if o.targetPort != "" {
				tp = intstr.Parse(o.targetPort)
			}
			svcName := o.name
			if svcName == "" {
				svcName = name
			}
			svc := &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: svcName, Labels: obj.GetLabels()},
				Spec: corev1.ServiceSpec{Selector: selector, Type: corev1.ServiceType(o.typ), LoadBalancerIP: o.lbIP,
					Ports: []corev1.ServicePort{{Port: p, TargetPort: tp, Protocol: corev1.Protocol(strings.ToUpper(o.protocol))}}},
			}
			if _, err := g.client().Create(cmd.Context(), svc); err != nil {
				return err
			}
			fmt.Printf("service %q exposed\n", svcName)
			return nil
		},
	}
	cmd.Flags().StringVar(&o.port, "port", "", "the Service's port")
	cmd.Flags().StringVar(&o.targetPort, "target-port", "", "the pods' port (number or name; default the port)")
	cmd.Flags().StringVar(&o.name, "name", "", "the Service's name (default the object's)")
	cmd.Flags().StringVar(&o.typ, "type", "ClusterIP", "ClusterIP or LoadBalancer")
	cmd.Flags().StringVar(&o.lbIP, "load-balancer-ip", "", "the Floating IP of a LoadBalancer Service")
	cmd.Flags().StringVar(&o.protocol, "protocol", "TCP", "TCP or UDP")
	return cmd
}

func newSetCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "set", Short: "Change fields of objects"}
	img := &cobra.Command{
		Use:   "image deployment/NAME CONTAINER=IMAGE...",
		Short: "Change the image of containers of a deployment (rolls it out)",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			dep, err := getDeployment(cmd.Context(), args[:1])
			if err != nil {
				return err
			}
			for _, a := range args[1:] {
				c, im, ok := strings.Cut(a, "=")
				if !ok {
					return fmt.Errorf("%q: use CONTAINER=IMAGE", a)
				}
				found := false
				for i := range dep.Spec.Template.Spec.Containers {
					if ct := &dep.Spec.Template.Spec.Containers[i]; ct.Name == c || c == "*" {
						ct.Image, found = im, true
					}
				}
				if !found {
					return fmt.Errorf("unable to find container named %q in deployment %q", c, dep.Name)
				}
			}
			if _, err := g.client().Replace(cmd.Context(), dep); err != nil {
				return err
			}
			fmt.Printf("deployment %q image updated\n", dep.Name)
			return nil
		},
	}
	cmd.AddCommand(img)
	return cmd
}

func newRolloutCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "rollout", Short: "Follow the rollout of a deployment"}
	var timeout time.Duration
	status := &cobra.Command{
		Use:   "status deployment/NAME",
		Short: "Wait until a deployment's rollout is complete",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			deadline := time.Now().Add(timeout)
			last := ""
			for {
				dep, err := getDeployment(cmd.Context(), args)
				if err != nil {
					return err
				}
				msg, done := rolloutStatus(dep)
				if msg != last {
					fmt.Println(msg)
					last = msg
				}
				if done {
					return nil
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("timed out waiting for the rollout of deployment %q", dep.Name)
				}
				select {
				case <-cmd.Context().Done():
					return cmd.Context().Err()
				case <-time.After(200 * time.Millisecond):
				}
			}
		},
	}
	status.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait")
	cmd.AddCommand(status)
	return cmd
}

// rolloutStatus words the progress as kubectl's rollout status does.
func rolloutStatus(d *appsv1.Deployment) (string, bool) {
	want := *d.Spec.Replicas
	st := d.Status
	switch {
	case st.ObservedGeneration < d.Generation:
		return "Waiting for deployment spec update to be observed...", false
	case st.UpdatedReplicas < want:
		return fmt.Sprintf("Waiting for deployment %q rollout to finish: %d out of %d new replicas have been updated...", d.Name, st.UpdatedReplicas, want), false
	case st.Replicas > st.UpdatedReplicas:
		return fmt.Sprintf("Waiting for deployment %q rollout to finish: %d old replicas are pending termination...", d.Name, st.Replicas-st.UpdatedReplicas), false
	case st.AvailableReplicas < st.UpdatedReplicas:
		return fmt.Sprintf("Waiting for deployment %q rollout to finish: %d of %d updated replicas are available...", d.Name, st.AvailableReplicas, st.UpdatedReplicas), false
	}
	return fmt.Sprintf("deployment %q successfully rolled out", d.Name), true
}

func newWaitCmd() *cobra.Command {
	var forCond string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "wait TYPE/NAME... --for=(condition=NAME[=VALUE] | jsonpath='{PATH}'[=VALUE] | delete)",
		Short: "Wait until objects meet a condition",
		Example: `  pi wait --for=condition=Ready pod/nginx
  pi wait --for=jsonpath='{.status.loadBalancer.ingress[0].ip}'=198.18.0.1 service/web
  pi wait --for=delete pod/nginx --timeout=60s`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 && strings.Contains(args[0], "/") {
				for _, a := range args {
					if err := cmd.RunE(cmd, []string{a}); err != nil {
						return err
					}
				}
				return nil
			}
			kn, name, err := typeName(args)
			if err != nil {
				return err
			}
			k, err := lookupKind(kn)
			if err != nil {
				return err
			}
			cond, err := parseWaitFor(forCond)
			if err != nil {
				return err
			}
			deadline := time.Now().Add(timeout)
			for {
				o, err := g.client().Get(cmd.Context(), k, name)
				met := false
				switch {
				case cond.delete:
					met = client.IsNotFound(err)
				case err != nil:
					return err
				default:
					if met, err = cond.met(o); err != nil {
						return err
					}
				}
				if met {
					fmt.Printf("%s/%s condition met\n", k.Singular, name)
					return nil
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("timed out waiting for the condition on %s/%s", k.Plural, name)
				}
				select {
				case <-cmd.Context().Done():
					return cmd.Context().Err()
				case <-time.After(200 * time.Millisecond):
				}
			}
		},
	}
	cmd.Flags().StringVar(&forCond, "for", "condition=Ready", "condition=NAME[=VALUE] (Ready, Available, ...), jsonpath='{PATH}'[=VALUE], or delete")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait")
	return cmd
}

// waitFor is what `pi wait --for` waits for, as kubectl has it: a condition with a status (True unless
// given), a JSONPath that finds a value (the given one, or any), or the object's deletion.
type waitFor struct {
	delete          bool
	condition       string
	conditionStatus string
	path            string
	value           string
	anyValue        bool
}

func parseWaitFor(s string) (waitFor, error) {
	if s == "delete" {
		return waitFor{delete: true}, nil
	}
	if c, ok := strings.CutPrefix(s, "condition="); ok && c != "" {
		name, status, hasStatus := strings.Cut(c, "=")
		if !hasStatus {
			status = "True"
		}
		return waitFor{condition: name, conditionStatus: status}, nil
	}
	if p, ok := strings.CutPrefix(s, "jsonpath="); ok && p != "" {
		// The path is everything up to its closing brace; a bare path gets braces, as in kubectl.
		path, value, hasValue := p, "", false
		if strings.HasPrefix(p, "{") {
			end := strings.LastIndex(p, "}")
			if end < 0 {
				return waitFor{}, fmt.Errorf("--for=jsonpath: %q has no closing brace", p)
			}
			path, value = p[:end+1], p[end+1:]
			value, hasValue = strings.CutPrefix(value, "=")
			if !hasValue && value != "" {
				return waitFor{}, fmt.Errorf("--for=jsonpath: want '{PATH}' or '{PATH}=VALUE', not %q", p)
			}
		} else {
			path, value, hasValue = strings.Cut(p, "=")
			path = "{" + path + "}"
		}
		if _, err := printers.JSONPathValues(path, struct{}{}); err != nil {
			return waitFor{}, fmt.Errorf("--for=jsonpath: %v", err)
		}
		return waitFor{path: path, value: value, anyValue: !hasValue}, nil
	}
	return waitFor{}, fmt.Errorf("--for must be condition=NAME[=VALUE], jsonpath='{PATH}'[=VALUE] or delete, not %q", s)
}

func (w waitFor) met(o metav1.Object) (bool, error) {
	if w.condition != "" {
		return hasCondition(o, w.condition, w.conditionStatus), nil
	}
	values, err := printers.JSONPathValues(w.path, o)
	if err != nil {
		return false, err
	}
	switch {
	case len(values) == 0:
		return false, nil
	case w.anyValue:
		return true, nil
	case len(values) > 1:
		return false, fmt.Errorf("--for=jsonpath: %s finds %d values; a value can be compared with one only", w.path, len(values))
	}
	return values[0] == w.value, nil
}

// hasCondition tells whether an object's condition has the status wanted (True, False, Unknown; any case).
func hasCondition(o metav1.Object, cond, status string) bool {
	var conds map[string]string
	switch v := o.(type) {
	case *corev1.Pod:
		conds = map[string]string{}
		for _, c := range v.Status.Conditions {
			conds[strings.ToLower(string(c.Type))] = string(c.Status)
		}
	case *appsv1.Deployment:
		conds = map[string]string{}
		for _, c := range v.Status.Conditions {
			conds[strings.ToLower(string(c.Type))] = string(c.Status)
		}
	case *api.Account:
		conds = map[string]string{"ready": string(corev1.ConditionFalse)}
		if v.Status.Ready {
			conds["ready"] = string(corev1.ConditionTrue)
		}
	}
	got, ok := conds[strings.ToLower(cond)]
	return ok && strings.EqualFold(got, status)
}
