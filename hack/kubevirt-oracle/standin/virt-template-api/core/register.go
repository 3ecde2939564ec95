// Package core names the VirtualMachineTemplate API group (see ../../README.md: a build stand-in).
package core

const (
	GroupName            = "template.kubevirt.io"
	SingularResourceName = "virtualmachinetemplate"
	PluralResourceName   = SingularResourceName + "s"
)
