// Package virttemplate declares the client constructor by signature only (see ../../README.md).
package virttemplate

import (
	"errors"

	"k8s.io/client-go/rest"
)

// TemplateV1beta1 is the one group client the informer asks the clientset for.
type TemplateV1beta1 interface {
	RESTClient() rest.Interface
}

// Clientset has no clients: NewForConfig always fails.
type Clientset struct{}

// TemplateV1beta1 is never reached, NewForConfig having failed first.
func (*Clientset) TemplateV1beta1() TemplateV1beta1 { return nil }

// NewForConfig refuses: the oracle runs no informer and has no cluster to talk to.
func NewForConfig(*rest.Config) (*Clientset, error) {
	return nil, errors.New("virt-template-client-go stand-in: no VirtualMachineTemplate client in the kvtune oracle")
}
