//! Link-time settings of the `clusterctl` binary.
//!
//! Relative relocations are packed (DT_RELR, glibc 2.36+: the Debian bookworm of the operator's
//! machine and of the nodes). A position-independent Rust binary carries one 24-byte relocation
//! per pointer in its read-only data (vtables, string tables), several MB that the loader reads
//! at every start and that then stay resident in every process of it: the worker agent's resident
//! memory is one of the figures `scripts/bench` measures.
fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    println!("cargo:rerun-if-changed=build.rs");
}
