package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/client"
	"github.com/pilab/pi/lab/printers"
	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

func newDescribeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "describe TYPE NAME",
		Short: "Show an object in detail, with its events",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kn, name, slash := strings.Cut(args[0], "/")
			if !slash {
				if len(args) != 2 {
					return fmt.Errorf("describe needs TYPE NAME")
				}
				name = args[1]
			}
			k, err := lookupKind(kn)
			if err != nil {
				return err
			}
			cl := g.client()
			o, err := cl.Get(cmd.Context(), k, name)
			if err != nil {
				return err
			}
			return describe(cmd.Context(), cl, os.Stdout, o)
		},
	}
}

type describer struct {
	tw *tabwriter.Writer
}

func (d describer) line(indent int, key string, val any) {
	fmt.Fprintf(d.tw, "%s%s:\t%v\n", strings.Repeat("  ", indent), key, val)
}

func mapString(m map[string]string, sep string) string {
	if len(m) == 0 {
		return "<none>"
	}
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return strings.Join(out, sep)
}

func describe(ctx context.Context, cl *client.Client, w io.Writer, o metav1.Object) error {
	d := describer{tw: tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)}
	if f, ok := o.(*api.FloatingIP); ok {
		describeFIP(ctx, cl, d, f)
		d.tw.Flush()
		return describeEvents(ctx, cl, w, o)
	}
	d.line(0, "Name", o.GetName())
	if api.KindOf(o).Namespaced {
		d.line(0, "Namespace", api.Namespace)
		d.line(0, "Account", api.AccountOf(o))
	}
	d.line(0, "Labels", mapString(o.GetLabels(), "\n\t"))
	ann := map[string]string{}
	for k, v := range o.GetAnnotations() {
		if k != api.AccountAnnotation {
			ann[k] = v
		}
	}
	d.line(0, "Annotations", mapString(ann, "\n\t"))
	d.line(0, "CreationTimestamp", o.GetCreationTimestamp().UTC().Format("Mon, 02 Jan 2006 15:04:05 -0700"))
	switch v := o.(type) {
	case *corev1.Pod:
		describePod(d, v)
	case *corev1.Service:
		d.line(0, "Selector", mapString(v.Spec.Selector, ","))
		d.line(0, "Type", v.Spec.Type)
		d.line(0, "IP", v.Spec.ClusterIP)
		if v.Spec.LoadBalancerIP != "" {
			d.line(0, "LoadBalancer IP", v.Spec.LoadBalancerIP)
		}
		for _, in := range v.Status.LoadBalancer.Ingress {
			d.line(0, "LoadBalancer Ingress", in.IP)
		}
		for _, p := range v.Spec.Ports {
			name := p.Name
			if name == "" {
				name = "<unset>"
			}
			d.line(0, "Port", fmt.Sprintf("%s  %d/%s", name, p.Port, p.Protocol))
			d.line(0, "TargetPort", fmt.Sprintf("%s/%s", p.TargetPort.String(), p.Protocol))
		}
		k, _ := api.LookupKind("Endpoints")
		if ep, err := cl.Get(ctx, k, v.Name); err == nil {
			d.line(0, "Endpoints", printers.EndpointsString(ep.(*corev1.Endpoints), 0))
		} else {
			d.line(0, "Endpoints", "<none>")
		}
		d.line(0, "Session Affinity", v.Spec.SessionAffinity)
	case *appsv1.Deployment:
		d.line(0, "Selector", metav1.FormatLabelSelector(v.Spec.Selector))
		d.line(0, "Replicas", fmt.Sprintf("%d desired | %d updated | %d total | %d available | %d unavailable",
			*v.Spec.Replicas, v.Status.UpdatedReplicas, v.Status.Replicas, v.Status.AvailableReplicas, v.Status.UnavailableReplicas))
		d.line(0, "StrategyType", v.Spec.Strategy.Type)
		if ru := v.Spec.Strategy.RollingUpdate; ru != nil {
			d.line(0, "RollingUpdateStrategy", fmt.Sprintf("%s max unavailable, %s max surge", ru.MaxUnavailable, ru.MaxSurge))
		}
		d.line(0, "Pod Template", "")
		d.line(1, "Labels", mapString(v.Spec.Template.Labels, ","))
		describeContainers(d, v.Spec.Template.Spec.Containers, nil)
	default:
		d.tw.Flush()
		data, err := yaml.Marshal(o)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s", data)
	}
	d.tw.Flush()
	return describeEvents(ctx, cl, w, o)
}

// describeFIP is `pi describe fip ADDRESS`: what a learner asks of a Floating IP — whose it is, what it
// is called, since when it is charged, and which Services answer on it (with the ports they take on it,
// since several Services share one address on different ports). Namespace, labels and annotations are
// left out: a FIP has none a user sets.
func describeFIP(ctx context.Context, cl *client.Client, d describer, f *api.FloatingIP) {
	d.line(0, "Name", f.Name)
	d.line(0, "Account", api.AccountOf(f))
	// The object's name is its address; said again under its own heading, as a cloud console does.
	d.line(0, "Address", f.Name)
	d.line(0, "Display Name", orNoneString(f.Spec.DisplayName))
	created := f.CreationTimestamp
	d.line(0, "Created", fmt.Sprintf("%s (%s ago)", created.UTC().Format("Mon, 02 Jan 2006 15:04:05 -0700"), printers.Age(created)))
	if len(f.Status.Services) == 0 {
		d.line(0, "Services", "<none>")
		return
	}
	svcKind, _ := api.LookupKind("Service")
	var rows []string
	for _, name := range f.Status.Services {
		ports := ""
		if o, err := cl.Get(ctx, svcKind, name); err == nil {
			ports = printers.ServicePorts(o.(*corev1.Service))
		}
		rows = append(rows, strings.TrimSpace(name+"  "+ports))
	}
	d.line(0, "Services", strings.Join(rows, "\n\t"))
}

func orNoneString(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

func describePod(d describer, p *corev1.Pod) {
	if p.Status.StartTime != nil {
		d.line(0, "Start Time", p.Status.StartTime.UTC().Format("Mon, 02 Jan 2006 15:04:05 -0700"))
	}
	status := string(p.Status.Phase)
	if p.DeletionTimestamp != nil {
		status = "Terminating (lasts until its containers stop)"
	}
	d.line(0, "Status", status)
	d.line(0, "IP", p.Status.PodIP)
	d.line(0, "Restart Policy", p.Spec.RestartPolicy)
	describeContainers(d, p.Spec.Containers, p.Status.ContainerStatuses)
	if len(p.Status.Conditions) > 0 {
		d.line(0, "Conditions", "")
		fmt.Fprintf(d.tw, "  Type\tStatus\n")
		for _, c := range p.Status.Conditions {
			fmt.Fprintf(d.tw, "  %s\t%s\n", c.Type, c.Status)
		}
	}
}

func describeState(d describer, title string, s corev1.ContainerState) {
	switch {
	case s.Running != nil:
		d.line(2, title, "Running")
		d.line(3, "Started", s.Running.StartedAt.UTC().Format("Mon, 02 Jan 2006 15:04:05 -0700"))
	case s.Waiting != nil:
		d.line(2, title, "Waiting")
		d.line(3, "Reason", s.Waiting.Reason)
		if s.Waiting.Message != "" {
			d.line(3, "Message", s.Waiting.Message)
		}
	case s.Terminated != nil:
		d.line(2, title, "Terminated")
		d.line(3, "Reason", s.Terminated.Reason)
		d.line(3, "Exit Code", s.Terminated.ExitCode)
		d.line(3, "Started", s.Terminated.StartedAt.UTC().Format("Mon, 02 Jan 2006 15:04:05 -0700"))
		d.line(3, "Finished", s.Terminated.FinishedAt.UTC().Format("Mon, 02 Jan 2006 15:04:05 -0700"))
	default:
		d.line(2, title, "Waiting")
	}
}

func describeContainers(d describer, cs []corev1.Container, statuses []corev1.ContainerStatus) {
	d.line(0, "Containers", "")
	for _, c := range cs {
		fmt.Fprintf(d.tw, "  %s:\n", c.Name)
		var st *corev1.ContainerStatus
		for i := range statuses {
			if statuses[i].Name == c.Name {
				st = &statuses[i]
			}
		}
		if st != nil && st.ContainerID != "" {
			d.line(2, "Container ID", st.ContainerID)
		}
		d.line(2, "Image", c.Image)
		if st != nil && st.ImageID != "" {
			d.line(2, "Image ID", st.ImageID)
		}
		var ports []string
		for _, p := range c.Ports {
			ports = append(ports, fmt.Sprintf("%d/%s", p.ContainerPort, p.Protocol))
		}
		if len(ports) == 0 {
			ports = []string{"<none>"}
		}
		d.line(2, "Port", strings.Join(ports, ", "))
		if len(c.Command) > 0 {
			d.line(2, "Command", strings.Join(c.Command, " "))
		}
		if len(c.Args) > 0 {
			d.line(2, "Args", strings.Join(c.Args, " "))
		}
		if st != nil {
			describeState(d, "State", st.State)
			if st.LastTerminationState.Terminated != nil {
				describeState(d, "Last State", st.LastTerminationState)
			}
			d.line(2, "Ready", strings.Title(fmt.Sprint(st.Ready)))
			d.line(2, "Restart Count", st.RestartCount)
		}
		if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
			d.line(2, "Limits", "")
			d.line(3, "memory", q.String())
		}
		if c.ReadinessProbe != nil {
			d.line(2, "Readiness", probeString(c.ReadinessProbe))
		}
		if len(c.Env) == 0 {
			d.line(2, "Environment", "<none>")
		} else {
			d.line(2, "Environment", "")
			for _, e := range c.Env {
				d.line(3, e.Name, e.Value)
			}
		}
	}
}

func probeString(p *corev1.Probe) string {
	var what string
	switch {
	case p.HTTPGet != nil:
		what = fmt.Sprintf("http-get http://:%s%s", p.HTTPGet.Port.String(), p.HTTPGet.Path)
	case p.TCPSocket != nil:
		what = fmt.Sprintf("tcp-socket :%s", p.TCPSocket.Port.String())
	case p.Exec != nil:
		what = "exec " + strings.Join(p.Exec.Command, " ")
	}
	return fmt.Sprintf("%s delay=%ds timeout=%ds period=%ds #success=%d #failure=%d", what, p.InitialDelaySeconds, p.TimeoutSeconds, p.PeriodSeconds, p.SuccessThreshold, p.FailureThreshold)
}

func describeEvents(ctx context.Context, cl *client.Client, w io.Writer, o metav1.Object) error {
	if !api.KindOf(o).Namespaced {
		return nil
	}
	k, _ := api.LookupKind("Event")
	objs, err := cl.List(ctx, k, client.ListOptions{})
	if err != nil {
		return err
	}
	var evs []*corev1.Event
	for _, e := range objs {
		if ev := e.(*corev1.Event); ev.InvolvedObject.UID == o.GetUID() {
			evs = append(evs, ev)
		}
	}
	if len(evs) == 0 {
		fmt.Fprintln(w, "Events:            <none>")
		return nil
	}
	sort.Slice(evs, func(i, j int) bool { return evs[i].FirstTimestamp.Before(&evs[j].FirstTimestamp) })
	fmt.Fprintln(w, "Events:")
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  Type\tReason\tAge\tFrom\tMessage")
	fmt.Fprintln(tw, "  ----\t------\t----\t----\t-------")
	for _, ev := range evs {
		age := printers.Age(ev.LastTimestamp)
		if ev.Count > 1 {
			age = fmt.Sprintf("%s (x%d over %s)", age, ev.Count, printers.Age(ev.FirstTimestamp))
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", ev.Type, ev.Reason, age, ev.Source.Component, ev.Message)
	}
	return tw.Flush()
}
