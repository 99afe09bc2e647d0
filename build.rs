//! Link-time settings of the `clusterctl` binary.
//!
//! Relative relocations are packed (DT_RELR, glibc 2.36+: the Debian bookworm of the operator's
//! machine and of the nodes). A position-independent Rust binary carries one 24-byte relocation
//! per pointer in its read-only data (vtables, string tables), several MB that the loader reads
//! at every start and that then stay resident in every process of it: the worker agent's resident
//! memory is one of the figures `scripts/bench` measures.
//!
//! The binary is stripped of its symbol table and debug information: `create` uploads it to every
//! node, which checks and unpacks it, and the symbols were more than a third of the release build
//! (68 MB, 43 MB stripped) and over half of the debug build (137 MB). A panic still says what and
//! where (its message and source location are data, not symbols); only a backtrace's frame names
//! are lost. Test and example binaries keep their symbols.
fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    println!("cargo:rustc-link-arg-bins=-Wl,--strip-all");
    println!("cargo:rerun-if-changed=build.rs");
}
