// fake-cri answers the calls a kubelet makes to its container runtime before it builds its
// CPU, memory and topology managers (the runtime's Version, the image filesystems), and
// refuses every other call. It lets a test start the real kubelet on a rendered configuration
// and see whether the kubelet's own validation (reservedMemory against the node allocatable
// reservation, reservedSystemCPUs, cpuManagerPolicyOptions) accepts it, without a container
// runtime that would run anything.
//
// Usage: fake-cri <unix socket path>
package main

import (
	"context"
	"fmt"
	"net"
	"os"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

type runtime struct {
	runtimeapi.UnimplementedRuntimeServiceServer
}

func (runtime) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{Version: "0.1.0", RuntimeName: "kvtune-fake-cri",
		RuntimeVersion: "0.1.0", RuntimeApiVersion: "v1"}, nil
}

type images struct {
	runtimeapi.UnimplementedImageServiceServer
}

func (images) ImageFsInfo(context.Context, *runtimeapi.ImageFsInfoRequest) (*runtimeapi.ImageFsInfoResponse, error) {
	return &runtimeapi.ImageFsInfoResponse{}, nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: fake-cri <unix socket path>")
		os.Exit(2)
	}
	_ = os.Remove(os.Args[1])
	listener, err := net.Listen("unix", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	server := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(server, runtime{})
	runtimeapi.RegisterImageServiceServer(server, images{})
	fmt.Println("serving", os.Args[1])
	if err := server.Serve(listener); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
