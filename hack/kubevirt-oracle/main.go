// Command kubevirt-oracle answers, with KubeVirt's own code, what KubeVirt does to a VMI at
// admission: its defaulting (virt-api's VMI mutator), its create admitter's verdict, the memory
// overhead virt-controller computes, and the virt-launcher pod resources it renders from them.
//
// Why: kvtune's webhook shapes VMIs before KubeVirt sees them. kvtune's tests judge that shaping
// with this program rather than with kvtune's beliefs about KubeVirt, so a shaped VMI that
// KubeVirt would refuse fails a test here instead of a user's VM creation.
//
// Protocol: one JSON request per line on stdin, one JSON answer per line on stdout, so that a test
// session keeps one process and asks it thousands of times. A request:
//
//	{"op": "default" | "admit" | "overhead", "vmi": {...},
//	 "config": {KubeVirt spec.configuration}, "arch": "amd64"}
//
// "default" answers {"vmi": <defaulted VMI>} (or {"error": ...} when the mutator refuses);
// "admit" answers {"allowed": bool, "causes": [{"field", "message"}], "warnings": [...]};
// "overhead" answers {"overhead": bytes, "podRequests": {...}, "podLimits": {...}}.
// {"op": "version", "version": "v1.9.0-beta.0.12+abc"} answers how KubeVirt's virt-operator
// reads a KubeVirt version (github.com/coreos/go-semver after trimming one "v"):
// {"semver": {"major", "minor", "patch", "preRelease"}}, or {"error": ...} where it refuses it.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/coreos/go-semver/semver"

	admissionv1 "k8s.io/api/admission/v1"
	k8sv1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8sfield "k8s.io/apimachinery/pkg/util/validation/field"

	v1 "kubevirt.io/api/core/v1"

	"kubevirt.io/kubevirt/pkg/hypervisor"
	netadmitter "kubevirt.io/kubevirt/pkg/network/admitter"
	netresources "kubevirt.io/kubevirt/pkg/network/resources"
	"kubevirt.io/kubevirt/pkg/testutils"
	"kubevirt.io/kubevirt/pkg/virt-api/webhooks"
	"kubevirt.io/kubevirt/pkg/virt-api/webhooks/mutating-webhook/mutators"
	"kubevirt.io/kubevirt/pkg/virt-api/webhooks/validating-webhook/admitters"
	virtconfig "kubevirt.io/kubevirt/pkg/virt-config"
	"kubevirt.io/kubevirt/pkg/virt-controller/services"
)

type request struct {
	Op      string                   `json:"op"`
	VMI     json.RawMessage          `json:"vmi"`
	Config  v1.KubeVirtConfiguration `json:"config"`
	Arch    string                   `json:"arch"`
	Version string                   `json:"version"`
}

type semverAnswer struct {
	Major      int64  `json:"major"`
	Minor      int64  `json:"minor"`
	Patch      int64  `json:"patch"`
	PreRelease string `json:"preRelease"`
}

type cause struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

type answer struct {
	Error       string           `json:"error,omitempty"`
	VMI         json.RawMessage  `json:"vmi,omitempty"`
	Allowed     *bool            `json:"allowed,omitempty"`
	Causes      []cause          `json:"causes,omitempty"`
	Warnings    []string         `json:"warnings,omitempty"`
	Overhead    *int64           `json:"overhead,omitempty"`
	PodRequests k8sv1.ResourceList `json:"podRequests,omitempty"`
	PodLimits   k8sv1.ResourceList `json:"podLimits,omitempty"`
	Semver      *semverAnswer      `json:"semver,omitempty"`
}

func clusterConfig(req *request) *virtconfig.ClusterConfig {
	arch := req.Arch
	if arch == "" {
		arch = "amd64"
	}
	kv := &v1.KubeVirt{
		ObjectMeta: metav1.ObjectMeta{Name: "kubevirt", Namespace: "kubevirt"},
		Spec:       v1.KubeVirtSpec{Configuration: req.Config},
		Status:     v1.KubeVirtStatus{DefaultArchitecture: arch},
	}
	config, _, _ := testutils.NewFakeClusterConfigUsingKVWithCPUArch(kv, arch)
	return config
}

func review(raw json.RawMessage) *admissionv1.AdmissionReview {
	return &admissionv1.AdmissionReview{Request: &admissionv1.AdmissionRequest{
		Operation: admissionv1.Create,
		Resource: metav1.GroupVersionResource{
			Group:    webhooks.VirtualMachineInstanceGroupVersionResource.Group,
			Version:  webhooks.VirtualMachineInstanceGroupVersionResource.Version,
			Resource: webhooks.VirtualMachineInstanceGroupVersionResource.Resource,
		},
		Object: runtime.RawExtension{Raw: raw},
	}}
}

func responseError(resp *admissionv1.AdmissionResponse) string {
	if resp.Result == nil {
		return "refused without a message"
	}
	text := resp.Result.Message
	if resp.Result.Details != nil {
		for _, c := range resp.Result.Details.Causes {
			text += fmt.Sprintf("; %s: %s", c.Field, c.Message)
		}
	}
	return text
}

// defaulted applies virt-api's VMI mutator the way the apiserver does: the answer is a JSON patch
// that replaces spec, metadata and status with the mutator's re-serialised structs.
func defaulted(req *request, config *virtconfig.ClusterConfig) answer {
	informer, _ := testutils.NewFakeInformerFor(&v1.VirtualMachineInstancePreset{})
	mutator := &mutators.VMIsMutator{ClusterConfig: config, VMIPresetInformer: informer}
	resp := mutator.Mutate(review(req.VMI))
	if !resp.Allowed {
		return answer{Error: responseError(resp)}
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(req.VMI, &obj); err != nil {
		return answer{Error: err.Error()}
	}
	var ops []struct {
		Op    string          `json:"op"`
		Path  string          `json:"path"`
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(resp.Patch, &ops); err != nil {
		return answer{Error: err.Error()}
	}
	for _, op := range ops {
		if op.Op != "replace" && op.Op != "add" || len(op.Path) < 2 {
			return answer{Error: fmt.Sprintf("unexpected patch operation %s %s", op.Op, op.Path)}
		}
		obj[op.Path[1:]] = op.Value
	}
	out, err := json.Marshal(obj)
	if err != nil {
		return answer{Error: err.Error()}
	}
	return answer{VMI: out}
}

func admitted(req *request, config *virtconfig.ClusterConfig) answer {
	admitter := &admitters.VMICreateAdmitter{
		ClusterConfig: config,
		// virt-api registers the network validator as the one extra spec validator.
		SpecValidators: []admitters.SpecValidator{
			func(f *k8sfield.Path, spec *v1.VirtualMachineInstanceSpec, c *virtconfig.ClusterConfig) []metav1.StatusCause {
				return netadmitter.Validate(f, spec, c)
			},
		},
	}
	resp := admitter.Admit(nil, review(req.VMI)) //nolint:staticcheck // the context is unused
	allowed := resp.Allowed
	ans := answer{Allowed: &allowed, Warnings: resp.Warnings}
	if resp.Result != nil {
		if resp.Result.Details != nil {
			for _, c := range resp.Result.Details.Causes {
				ans.Causes = append(ans.Causes, cause{Field: c.Field, Message: c.Message})
			}
		}
		if len(ans.Causes) == 0 && !allowed {
			ans.Causes = append(ans.Causes, cause{Message: resp.Result.Message})
		}
	}
	return ans
}

// overhead is virt-controller's memory overhead for the VMI and the memory and CPU parts of the
// virt-launcher pod's resources, rendered with the template service's own options in its order.
func overhead(req *request, config *virtconfig.ClusterConfig) answer {
	vmi := &v1.VirtualMachineInstance{}
	if err := json.Unmarshal(req.VMI, vmi); err != nil {
		return answer{Error: err.Error()}
	}
	backend := hypervisor.NewLauncherHypervisorResources(config.GetHypervisor().Name)
	total := services.CalculateMemoryOverhead(config, netresources.MemoryCalculator{}, vmi, backend)
	value := total.Value()

	domain := vmi.Spec.Domain
	var options []services.ResourceRendererOption
	if domain.Resources.Requests.Memory().IsZero() {
		options = append(options, services.WithMemoryRequests(domain.Memory, config.GetMemoryOvercommit()))
	}
	if vmi.IsCPUDedicated() {
		// The supplemental pool's IO threads count once more in the emulator thread's parity,
		// as template.go's VMIResourcePredicates passes them.
		additionalCPUs := uint32(0)
		if domain.IOThreadsPolicy != nil && *domain.IOThreadsPolicy == v1.IOThreadsPolicySupplementalPool &&
			domain.IOThreads != nil && domain.IOThreads.SupplementalPoolThreadCount != nil {
			additionalCPUs = *domain.IOThreads.SupplementalPoolThreadCount
		}
		options = append(options, services.WithCPUPinning(vmi, vmi.Annotations, additionalCPUs))
	} else {
		options = append(options, services.WithoutDedicatedCPU(vmi, config.GetCPUAllocationRatio(), false))
	}
	if domain.Memory != nil && domain.Memory.Hugepages != nil {
		options = append(options, services.WithHugePages(domain.Memory, total))
	} else {
		options = append(options, services.WithMemoryOverhead(domain.Resources, total))
	}
	renderer := services.NewResourceRenderer(domain.Resources.Limits, domain.Resources.Requests, options...)
	return answer{Overhead: &value, PodRequests: keep(renderer.Requests()), PodLimits: keep(renderer.Limits())}
}

// parsedVersion reads a version as virt-operator's shouldTakeUpdatePath does
// (pkg/virt-operator/resource/apply/reconcile.go).
func parsedVersion(req *request) answer {
	v, err := semver.NewVersion(strings.TrimPrefix(req.Version, "v"))
	if err != nil {
		return answer{Error: err.Error()}
	}
	return answer{Semver: &semverAnswer{v.Major, v.Minor, v.Patch, string(v.PreRelease)}}
}

// keep drops what the renderer adds for other reasons (ephemeral storage, devices).
func keep(list k8sv1.ResourceList) k8sv1.ResourceList {
	out := k8sv1.ResourceList{}
	for name, q := range list {
		if name == k8sv1.ResourceMemory || name == k8sv1.ResourceCPU ||
			len(name) > len(k8sv1.ResourceHugePagesPrefix) && string(name[:len(k8sv1.ResourceHugePagesPrefix)]) == k8sv1.ResourceHugePagesPrefix {
			out[name] = q
		}
	}
	return out
}


func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 16<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var req request
		var ans answer
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			ans = answer{Error: "request: " + err.Error()}
		} else {
			config := clusterConfig(&req)
			switch req.Op {
			case "default":
				ans = defaulted(&req, config)
			case "admit":
				ans = admitted(&req, config)
			case "overhead":
				ans = overhead(&req, config)
			case "version":
				ans = parsedVersion(&req)
			default:
				ans = answer{Error: fmt.Sprintf("unknown op %q (default, admit, overhead, version)", req.Op)}
			}
		}
		if err := out.Encode(ans); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
