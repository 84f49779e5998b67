// Package scenarios holds the workshops of pilab as scenario files and the runner that plays them against a
// real lab, headless (`pi scenario run`, CI) or step by step in the terminal UI (`pi tutorial`).
//
// # Scenario files
//
// A scenario is one YAML file, read strictly: an unknown or misspelt field is an error naming the file, the
// line and the field. The scenario's name is the file name without its extension and without a leading
// "NN-" (which only orders the built-in ones): 01-pod-networking.yaml is "pod-networking".
//
//	title: Pod networking               # one line
//	intro: |                            # markdown, shown before the first step
//	  ...
//	images: [nginx, httpd]              # lab images the scenario needs; missing ones are built first
//	steps:
//	  - title: Reach httpd from nginx
//	    text: |                         # markdown: what the learner reads
//	      ...
//	    commands:                       # what the learner runs, in order; each must succeed
//	      - pi get pods -o wide         # a pi command line, shown and run verbatim (no shell)
//	      - run: pi get pods -o wide    # the same, with options:
//	        capture:                    #   VAR: regexp with one group, matched against stdout
//	          HTTPD_IP: '(?m)^httpd\s+\S+\s+Running\s+\S+\s+\S+\s+(\S+)'
//	        within: 30s                 #   retry until it succeeds (and its captures match)
//	      - write: service.yml          # write a file in the scenario's working directory, shown as a
//	        from: manifests/service.yml #   heredoc; from: is relative to the scenario file; replace:
//	        replace:                    #   maps text of that file to what goes in its place
//	          104.154.140.179: '{{.FIP}}'
//	      - http: http://{{.FIP}}:8080/ # an HTTP GET from the laptop (the lab's Internet side); prints the body
//	    checks:                         # what proves the step worked, after its commands
//	      - match: It works!            # no run/http: looks at the step's output (stdout of its commands)
//	      - run: pi wait --for=condition=Ready pod/nginx --timeout=120s
//	      - http: http://{{.FIP}}:8080/
//	        match: Welcome to nginx!    # regexp the output must match
//	        within: 30s                 # retry until it holds
//	      - distinct: '"hostname": "([^"]+)"'   # at least atLeast different values of the group
//	        atLeast: 2
//	cleanup:                            # pi commands run at the end whatever happened; a command naming a
//	  - pi delete pod nginx --ignore-not-found   # variable never captured is skipped
//
// A check may also say noMatch (a regexp the output must not match), fails: true (the command must fail) and
// name (what the learner sees; one is made up from the check otherwise).
//
// # Variables
//
// Values captured from a command's output are variables of the scenario from then on. Commands, URLs,
// replace values and check patterns use them as {{.NAME}} (Go template syntax, so shell text such as $(seq 5)
// inside a pod's sh -c is left alone). Only {{.NAME}} is understood; a scenario that uses a variable no
// earlier command captures is refused when it is loaded.
//
// # Running
//
// A Runner plays one scenario: Prepare (images, working directory), RunStep for each step, Cleanup. Every pi
// command runs the current binary (os.Executable) with the lab's socket, lab and account in PI_SOCKET,
// PI_LAB and PI_ACCOUNT. What happens is reported as Events to the Options' Sink; RunHeadless turns them into
// a terminal-like transcript, the TUI into its panes.
package scenarios
