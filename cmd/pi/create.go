package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/client"
	"github.com/pilab/pi/lab/manifest"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type fileOptions struct {
	files []string
}

func (f *fileOptions) add(cmd *cobra.Command, what string) {
	cmd.Flags().StringSliceVarP(&f.files, "filename", "f", nil, "manifest file, directory or - for stdin, "+what)
}

// readAndCheck reads manifests for apply and asks the daemon whether the documents that would be created
// are accepted as one set, so that nothing is created unless everything can be; documents naming objects
// that exist are left to be replaced.
func readAndCheck(ctx context.Context, cl *client.Client, files []string) ([]manifest.Doc, error) {
	docs, err := manifest.Read(files, os.Stdin)
	if err != nil {
		return nil, err
	}
	var fresh []manifest.Doc
	for _, d := range docs {
		if _, err := cl.Get(ctx, d.Kind, d.Object.GetName()); err == nil {
			continue
		}
		fresh = append(fresh, d)
	}
	if err := createSet(ctx, cl, fresh, true); err != nil {
		return nil, err
	}
	return docs, nil
}

// createSet creates documents as one set (or, with dryRun, checks them): a refusal names each refused
// document and ends with "nothing was created".
func createSet(ctx context.Context, cl *client.Client, docs []manifest.Doc, dryRun bool) error {
	if len(docs) == 0 {
		return nil
	}
	objs := make([]metav1.Object, len(docs))
	for i, d := range docs {
		objs[i] = d.Object
	}
	err := cl.CreateSet(ctx, objs, dryRun)
	var ae *client.APIError
	if !errors.As(err, &ae) || len(ae.Items) == 0 {
		return err
	}
	var errs []string
	for _, it := range ae.Items {
		if it.Index >= 0 && it.Index < len(docs) {
			errs = append(errs, fmt.Sprintf("%s: %s", docs[it.Index].Where(), it.Error))
		}
	}
	return fmt.Errorf("%s\nnothing was created", strings.Join(errs, "\nerror: "))
}

func newCreateCmd() *cobra.Command {
	var f fileOptions
	cmd := &cobra.Command{
		Use:   "create -f FILE",
		Short: "Create objects from manifests (or: create deployment, create fip)",
		Example: `  pi create -f nginx.yml
  pi create -f dir/
  cat pod.yml | pi create -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(f.files) == 0 {
				return fmt.Errorf("must specify -f FILE (or a subcommand: deployment, fip)")
			}
			ctx := cmd.Context()
			cl := g.client()
			docs, err := manifest.Read(f.files, os.Stdin)
			if err != nil {
				return err
			}
			if err := createSet(ctx, cl, docs, false); err != nil {
				return err
			}
			for _, d := range docs {
				fmt.Printf("%s %q created\n", d.Kind.Singular, d.Object.GetName())
			}
			return nil
		},
	}
	f.add(cmd, "to create")
	cmd.AddCommand(newCreateDeploymentCmd(), newCreateFIPCmd())
	return cmd
}

func newApplyCmd() *cobra.Command {
	var f fileOptions
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Create objects from manifests, or update them to match",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(f.files) == 0 {
				return fmt.Errorf("must specify -f FILE")
			}
			ctx := cmd.Context()
			cl := g.client()
			docs, err := readAndCheck(ctx, cl, f.files)
			if err != nil {
				return err
			}
			for _, d := range docs {
				old, err := cl.Get(ctx, d.Kind, d.Object.GetName())
				if client.IsNotFound(err) {
					if _, err := cl.Create(ctx, d.Object); err != nil {
						return fmt.Errorf("%s: %v", d.Where(), err)
					}
					fmt.Printf("%s/%s created\n", d.Kind.Singular, d.Object.GetName())
					continue
				}
				if err != nil {
					return err
				}
				out, err := cl.Replace(ctx, d.Object)
				if err != nil {
					return fmt.Errorf("%s: %v", d.Where(), err)
				}
				verb := "configured"
				if out.GetResourceVersion() == old.GetResourceVersion() || sameSpec(old, out) {
					verb = "unchanged"
				}
				fmt.Printf("%s/%s %s\n", d.Kind.Singular, d.Object.GetName(), verb)
			}
			return nil
		},
	}
	f.add(cmd, "to apply")
	return cmd
}

type deleteOptions struct {
	fileOptions
	selector string
	all      bool
	wait     bool
	timeout  time.Duration
	ignore   bool
}

func newDeleteCmd() *cobra.Command {
	var o deleteOptions
	cmd := &cobra.Command{
		Use:   "delete (-f FILE | TYPE NAME... | TYPE -l SELECTOR | TYPE --all)",
		Short: "Delete objects; waits until they are gone",
		Example: `  pi delete pod nginx
  pi delete -f nginx.yml
  pi delete pods -l app=web
  pi delete fip 198.18.0.1`,
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			if len(args) == 0 {
				var out []string
				for _, k := range api.Kinds() {
					out = append(out, k.Singular)
				}
				return out, cobra.ShellCompDirectiveNoFileComp
			}
			return completeNames(cmd.Context(), args[0]), cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error { return runDelete(cmd.Context(), o, args) },
	}
	o.add(cmd, "to delete")
	cmd.Flags().StringVarP(&o.selector, "selector", "l", "", "delete the objects matching this label selector")
	cmd.Flags().BoolVar(&o.all, "all", false, "delete every object of the type")
	cmd.Flags().BoolVar(&o.wait, "wait", true, "wait until the objects are gone")
	cmd.Flags().BoolVar(&o.ignore, "ignore-not-found", false, "treat objects that do not exist as deleted, silently")
	cmd.Flags().DurationVar(&o.timeout, "timeout", 2*time.Minute, "how long to wait")
	return cmd
}

type target struct {
	kind api.Kind
	name string
	uid  string // what is being deleted: a controller may make a new object of the same name at once
}

func runDelete(ctx context.Context, o deleteOptions, args []string) error {
	cl := g.client()
	var targets []target
	switch {
	case len(o.files) > 0:
		docs, err := manifest.Read(o.files, os.Stdin)
		if err != nil {
			return err
		}
		for _, d := range docs {
			targets = append(targets, target{kind: d.Kind, name: d.Object.GetName()})
		}
	case len(args) == 0:
		return fmt.Errorf("you must provide one or more resources by argument or filename")
	default:
		kn, name, slash := strings.Cut(args[0], "/")
		k, err := lookupKind(kn)
		if err != nil {
			return err
		}
		names := args[1:]
		if slash {
			names = append([]string{name}, names...)
		}
		if len(names) == 0 {
			if o.selector == "" && !o.all {
				return fmt.Errorf("resource(s) were provided, but no name was specified; use a NAME, -l SELECTOR or --all")
			}
			objs, err := cl.List(ctx, k, client.ListOptions{LabelSelector: o.selector})
			if err != nil {
				return err
			}
			if len(objs) == 0 {
				fmt.Fprintf(os.Stderr, "No resources found\n")
			}
			for _, obj := range objs {
				names = append(names, obj.GetName())
			}
		}
		for _, n := range names {
			targets = append(targets, target{kind: k, name: n})
		}
	}
	var errs errorList
	var started []target
	for _, t := range targets {
		if o, err := cl.Get(ctx, t.kind, t.name); err == nil {
			t.uid = string(o.GetUID())
		}
		if err := cl.Delete(ctx, t.kind, t.name, false); err != nil {
			if o.ignore && client.IsNotFound(err) {
				continue
			}
			errs = append(errs, err)
			continue
		}
		started = append(started, t)
	}
	deadline := time.Now().Add(o.timeout)
	for _, t := range started {
		if o.wait {
			for {
				o, err := cl.Get(ctx, t.kind, t.name)
				if client.IsNotFound(err) || (err == nil && string(o.GetUID()) != t.uid) {
					break
				}
				if err != nil {
					return err
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("timed out waiting for %s %q to be deleted", t.kind.Singular, t.name)
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(100 * time.Millisecond):
				}
			}
		}
		fmt.Printf("%s %q deleted\n", t.kind.Singular, t.name)
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

type runOptions struct {
	image   string
	labels  string
	port    int32
	env     []string
	command bool
	restart string
	limits  string
}

func newRunCmd() *cobra.Command {
	var o runOptions
	cmd := &cobra.Command{
		Use:   "run NAME --image=IMAGE [--labels=k=v,...] [--port=N] [-- COMMAND ARGS...]",
		Short: "Run a pod with one container",
		Example: `  pi run httpd --image=httpd --labels=app=web --port=80
  pi run box --image=busybox -- sleep 3600`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pod, err := o.pod(args[0], args[1:])
			if err != nil {
				return err
			}
			if _, err := g.client().Create(cmd.Context(), pod); err != nil {
				return err
			}
			fmt.Printf("pod %q created\n", pod.Name)
			return nil
		},
	}
	cmd.Flags().StringVar(&o.image, "image", "", "the container image (required)")
	cmd.Flags().StringVarP(&o.labels, "labels", "l", "", "labels, e.g. app=web,tier=front (default run=NAME)")
	cmd.Flags().Int32Var(&o.port, "port", 0, "the port the container exposes")
	cmd.Flags().StringArrayVar(&o.env, "env", nil, "environment variables, K=V")
	cmd.Flags().BoolVar(&o.command, "command", false, "the words after -- are the command, not arguments to the image's entrypoint")
	cmd.Flags().StringVar(&o.restart, "restart", "Always", "restart policy: Always, OnFailure, Never")
	cmd.Flags().StringVar(&o.limits, "memory", "", "memory limit, e.g. 128Mi (sets the pod's size)")
	cmd.MarkFlagRequired("image")
	return cmd
}

func (o runOptions) pod(name string, rest []string) (*corev1.Pod, error) {
	labels, err := parseLabels(o.labels)
	if err != nil {
		return nil, err
	}
	if len(labels) == 0 {
		labels = map[string]string{"run": name}
	}
	c := corev1.Container{Name: name, Image: o.image}
	if o.command {
		c.Command = rest
	} else {
		c.Args = rest
	}
	if o.port > 0 {
		c.Ports = []corev1.ContainerPort{{ContainerPort: o.port}}
	}
	for _, e := range o.env {
		k, v, ok := strings.Cut(e, "=")
		if !ok {
			return nil, fmt.Errorf("--env %q: use K=V", e)
		}
		c.Env = append(c.Env, corev1.EnvVar{Name: k, Value: v})
	}
	if o.limits != "" {
		q, err := resource.ParseQuantity(o.limits)
		if err != nil {
			return nil, fmt.Errorf("--memory %q: %v", o.limits, err)
		}
		c.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: q}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{c}, RestartPolicy: corev1.RestartPolicy(o.restart)},
	}, nil
}

func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	if s == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("invalid label %q: use key=value", kv)
		}
		out[k] = v
	}
	return out, nil
}
