//! Exists so harness-daemon can name this crate as a build dependency (aya-build rebuilds
//! the BPF object when it changes); the programs are in the `harness-ebpf` binary.
#![no_std]
