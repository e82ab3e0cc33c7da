// Lets chaos-userspace name this crate as a build-dependency (so cargo rebuilds it when the
// programs change); the programs themselves are the `chaos-ebpf` binary target.
#![no_std]
