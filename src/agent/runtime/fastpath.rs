//! The established-connection fast path: a tc program (eBPF, on the `tcx` ingress hook of the
//! node's uplink and of every pod link) that forwards the packets of TCP connections the node has
//! already let through, without the node's IP layer: straight into the pod's namespace
//! (`bpf_redirect_peer`) or out of the uplink (`bpf_redirect`).
//!
//! A packet takes it only when the node would forward it unchanged anyway:
//! - IPv4 without options, not a fragment, TCP without SYN, FIN or RST (connections open and close
//!   through the IP layer, so conntrack, the policies and the proxy see every opening and closing);
//! - its connection is in the node's conntrack (the kernel's `bpf_skb_ct_lookup`), ASSURED (it saw
//!   traffic both ways: the policies and the Services' rules let it through), not dying, and
//!   without NAT (a Service's DNAT, a hostPort's, the masquerading to the outside: those packets
//!   need rewriting, which only the IP layer does);
//! - the node's own routing table (`bpf_fib_lookup`) forwards it, with a resolved neighbour, to a
//!   pod link (one the agent made, listed in a map) or, from a pod link, to the uplink;
//! - its TTL is above 1 (the TTL is decremented and the header checksum updated, as forwarding
//!   does: a pod is one routed hop behind its node, which keeps the metadata service's hop limit);
//! - one small packet (under 128 bytes: a pure ACK) in 256, drawn at random, takes the IP layer
//!   anyway, so that conntrack keeps seeing the connection (its timeout refreshed, its TCP window
//!   tracked); data packets never do, so the fast path never reorders a connection's data.
//!
//! Everything else goes on as before (`TC_ACT_OK`). What the fast path skips for the packets it
//! takes are the node's rules, which for established connections are accepts (`proxy/policy.rs`:
//! "packets of connections already allowed pass on conntrack's state"). Because conntrack misses
//! most of a connection's packets, the node tracks TCP windows liberally
//! (`nf_conntrack_tcp_be_liberal`, as kube-proxy's `--conntrack-tcp-be-liberal`), or a closing FIN
//! after a run of fast packets would look out of window.
//!
//! The program is assembled here (no compiler at build time): [`Asm`] is a small eBPF assembler
//! and [`program`] the whole program, one instruction per line. The conntrack functions and the
//! offset of `nf_conn.status` come from the kernel's BTF (`/sys/kernel/btf/vmlinux`). It needs
//! Linux 6.6 (tcx links); on an older kernel, or without BTF, the agent logs why once and pods use
//! the IP layer for everything, as without it. The links live as long as the agent: when it
//! stops, every packet goes through the IP layer again until it is back (docs/performance.md).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, OnceLock};

// ---------------------------------------------------------------- the bpf(2) system call

#[cfg(target_arch = "x86_64")]
const SYS_BPF: i64 = 321;
#[cfg(target_arch = "aarch64")]
const SYS_BPF: i64 = 280;
const BPF_MAP_CREATE: i64 = 0;
const BPF_MAP_UPDATE_ELEM: i64 = 2;
const BPF_MAP_DELETE_ELEM: i64 = 3;
const BPF_PROG_LOAD: i64 = 5;
const BPF_LINK_CREATE: i64 = 28;
const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_TCX_INGRESS: u32 = 46;

unsafe extern "C" {
    fn syscall(number: i64, ...) -> i64;
}

/// `bpf(cmd, attr)`: the attribute block is zero-padded to the size the kernel reads.
fn bpf(cmd: i64, attr: &[u8]) -> io::Result<i64> {
    let mut block = [0u8; 128];
    block[..attr.len()].copy_from_slice(attr);
    // SAFETY: `block` outlives the call; every pointer inside it points into buffers the caller
    // keeps alive until this returns.
    let r = unsafe { syscall(SYS_BPF, cmd, block.as_mut_ptr(), block.len() as u32) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

fn fd(raw: i64) -> OwnedFd {
    // SAFETY: a file descriptor the kernel just returned to us, owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(raw as RawFd) }
}

fn attr(fields: &[&[u8]]) -> Vec<u8> {
    fields.concat()
}

// ---------------------------------------------------------------- the kernel's types (BTF)

/// What the program needs of the running kernel's types.
#[derive(Debug, PartialEq, Eq)]
struct KernelTypes {
    ct_lookup: u32,
    ct_release: u32,
    status_offset: i16,
    opts_size: i32,
}

/// Reads the BTF blob's types: the ids of the two conntrack functions, the byte offset of
/// `nf_conn.status` and the size of `struct bpf_ct_opts`.
fn kernel_types(blob: &[u8]) -> Result<KernelTypes, String> {
    let u32_at = |at: usize| blob.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap())).ok_or("BTF ends early");
    if blob.get(..2) != Some(&[0x9f, 0xeb]) {
        return Err("not little-endian BTF".into());
    }
    let hdr_len = u32_at(4)? as usize;
    let (type_off, type_len, str_off) = (u32_at(8)? as usize, u32_at(12)? as usize, u32_at(16)? as usize);
    let types = hdr_len + type_off;
    let strings = hdr_len + str_off;
    let name = |off: u32| -> &[u8] {
        let start = strings + off as usize;
        let rest = blob.get(start..).unwrap_or_default();
        &rest[..rest.iter().position(|b| *b == 0).unwrap_or(rest.len())]
    };
    let (mut ct_lookup, mut ct_release, mut status_offset, mut opts_size) = (None, None, None, None);
    let (mut at, mut id) = (types, 1u32);
    while at < types + type_len {
        let (name_off, info, size) = (u32_at(at)?, u32_at(at + 4)?, u32_at(at + 8)?);
        at += 12;
        let (vlen, kind, kind_flag) = ((info & 0xffff) as usize, (info >> 24) & 0x1f, info >> 31);
        match (kind, name(name_off)) {
            (12, b"bpf_skb_ct_lookup") => ct_lookup = Some(id),
            (12, b"bpf_ct_release") => ct_release = Some(id),
            (4, b"bpf_ct_opts") => opts_size = Some(size as i32),
            (4, b"nf_conn") => {
                for m in 0..vlen {
                    let (m_name, m_offset) = (u32_at(at + m * 12)?, u32_at(at + m * 12 + 8)?);
                    if name(m_name) == b"status" {
                        let bits = if kind_flag == 1 { m_offset & 0xff_ffff } else { m_offset };
                        status_offset = Some((bits / 8) as i16);
                    }
                }
            }
            _ => {}
        }
        at += match kind {
            1 | 14 | 17 => 4,       // int, var, decl tag
            3 => 12,                // array
            4 | 5 => 12 * vlen,     // struct, union members
            6 | 13 => 8 * vlen,     // enum values, function parameters
            15 | 19 => 12 * vlen,   // datasec, enum64
            _ => 0,
        };
        id += 1;
    }
    Ok(KernelTypes {
        ct_lookup: ct_lookup.ok_or("no bpf_skb_ct_lookup (conntrack's BPF functions)")?,
        ct_release: ct_release.ok_or("no bpf_ct_release")?,
        status_offset: status_offset.ok_or("no nf_conn.status")?,
        opts_size: opts_size.ok_or("no struct bpf_ct_opts")?,
    })
}

// ---------------------------------------------------------------- a small eBPF assembler

/// Instructions with forward jumps to named labels.
#[derive(Default)]
struct Asm {
    code: Vec<(u8, u8, u8, i16, i32)>,
    jumps: Vec<(usize, &'static str)>,
    labels: HashMap<&'static str, usize>,
}

// opcodes (class | size/op | mode/source)
const LDX_B: u8 = 0x71;
const LDX_H: u8 = 0x69;
const LDX_W: u8 = 0x61;
const LDX_DW: u8 = 0x79;
const STX_H: u8 = 0x6b;
const STX_W: u8 = 0x63;
const ST_B: u8 = 0x72;
const ST_W: u8 = 0x62;
const ST_DW: u8 = 0x7a;
const MOV_K: u8 = 0xb7;
const MOV_X: u8 = 0xbf;
const ADD_K: u8 = 0x07;
const SUB_K: u8 = 0x17;
const AND_K: u8 = 0x57;
const JEQ_K: u8 = 0x15;
const JNE_K: u8 = 0x55;
const JGT_X: u8 = 0x2d;
const JGT_K: u8 = 0x25;
const JNE32_K: u8 = 0x56;
const JLE32_K: u8 = 0xb6;
const JA: u8 = 0x05;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
const LD_IMM64: u8 = 0x18;
/// `call` of a kernel function by BTF id, and `ld_imm64` of a map by file descriptor.
const PSEUDO_KFUNC_CALL: u8 = 2;
const PSEUDO_MAP_FD: u8 = 1;

// helpers
const MAP_LOOKUP_ELEM: i32 = 1;
const GET_PRANDOM_U32: i32 = 7;
const SKB_STORE_BYTES: i32 = 9;
const L3_CSUM_REPLACE: i32 = 10;
const REDIRECT: i32 = 23;
const FIB_LOOKUP: i32 = 69;
const REDIRECT_PEER: i32 = 155;

impl Asm {
    fn op(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) -> &mut Self {
        self.code.push((code, dst, src, off, imm));
        self
    }
    fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, label: &'static str) -> &mut Self {
        self.jumps.push((self.code.len(), label));
        self.op(code, dst, src, 0, imm)
    }
    fn label(&mut self, name: &'static str) {
        self.labels.insert(name, self.code.len());
    }
    /// `call helper(r1..r5)`, with `args` moved into r1.. first (registers, or immediates).
    fn call(&mut self, helper: i32, args: &[Arg]) -> &mut Self {
        for (i, arg) in args.iter().enumerate() {
            let r = i as u8 + 1;
            match *arg {
                Arg::Reg(src) => self.op(MOV_X, r, src, 0, 0),
                Arg::Imm(v) => self.op(MOV_K, r, 0, 0, v),
                Arg::Stack(off) => self.op(MOV_X, r, 10, 0, 0).op(ADD_K, r, 0, 0, off as i32),
            };
        }
        self.op(CALL, 0, 0, 0, helper)
    }
    /// `call` of the kernel function whose BTF id is `id`, arguments as for [`Asm::call`].
    fn kfunc(&mut self, id: u32, args: &[Arg]) -> &mut Self {
        self.call(id as i32, args);
        self.code.last_mut().expect("the call").2 = PSEUDO_KFUNC_CALL;
        self
    }
    fn build(mut self) -> Vec<u8> {
        for (at, label) in std::mem::take(&mut self.jumps) {
            self.code[at].3 = (self.labels[label] as i64 - at as i64 - 1) as i16;
        }
        self.code.iter().flat_map(|&(code, dst, src, off, imm)| {
            let mut b = [code, (src << 4) | dst, 0, 0, 0, 0, 0, 0];
            b[2..4].copy_from_slice(&off.to_le_bytes());
            b[4..].copy_from_slice(&imm.to_le_bytes());
            b
        }).collect()
    }
}

#[derive(Clone, Copy)]
enum Arg {
    Reg(u8),
    Imm(i32),
    /// The address `r10 + offset` (the stack).
    Stack(i16),
}
use Arg::{Imm, Reg, Stack};

/// `struct __sk_buff` offsets.
const SKB_LEN: i16 = 0;
const SKB_INGRESS_IFINDEX: i16 = 36;
const SKB_DATA: i16 = 76;
const SKB_DATA_END: i16 = 80;
/// The conntrack status bits looked at: `IPS_ASSURED`, `IPS_SRC_NAT`, `IPS_DST_NAT`, `IPS_DYING`;
/// only ASSURED may be set.
const CT_BITS: i32 = 0x4 | 0x10 | 0x20 | 0x200;
const CT_ASSURED: i32 = 0x4;

/// The program for a node whose uplink has index `uplink`; `pod_links` is the map of pod links'
/// indexes (key and value: the index).
fn program(types: &KernelTypes, uplink: i32, pod_links: RawFd) -> Vec<u8> {
    let mut a = Asm::default();
    // Stack: -16 the conntrack tuple (saddr, daddr, sport, dport), -32 its options, -96 the FIB
    // lookup's parameters (64 bytes), -100 the new TTL word, -104 the egress index (map key).
    a.op(MOV_X, 6, 1, 0, 0); // r6 = skb
    a.op(LDX_W, 2, 6, SKB_DATA, 0).op(LDX_W, 3, 6, SKB_DATA_END, 0);
    a.op(MOV_X, 4, 2, 0, 0).op(ADD_K, 4, 0, 0, 14 + 20 + 20).jump(JGT_X, 4, 3, 0, "pass");
    a.op(LDX_H, 4, 2, 12, 0).jump(JNE32_K, 4, 0, 0x0008, "pass"); // ethertype IPv4 (big-endian 0x0800)
    a.op(LDX_B, 4, 2, 14, 0).jump(JNE32_K, 4, 0, 0x45, "pass"); // version 4, 20-byte header
    a.op(LDX_B, 4, 2, 23, 0).jump(JNE32_K, 4, 0, 6, "pass"); // TCP
    a.op(LDX_H, 4, 2, 20, 0).op(AND_K, 4, 0, 0, 0xff3f).jump(JNE32_K, 4, 0, 0, "pass"); // MF, fragment offset
    a.op(LDX_B, 4, 2, 22, 0).jump(JLE32_K, 4, 0, 1, "pass"); // TTL
    a.op(LDX_B, 4, 2, 47, 0).op(AND_K, 4, 0, 0, 0x07).jump(JNE32_K, 4, 0, 0, "pass"); // FIN, SYN, RST
    a.op(LDX_H, 7, 2, 22, 0); // r7 = the TTL and protocol word, as in the packet
    a.op(LDX_W, 4, 2, 26, 0).op(STX_W, 10, 4, -16, 0); // saddr
    a.op(LDX_W, 4, 2, 30, 0).op(STX_W, 10, 4, -12, 0); // daddr
    a.op(LDX_W, 4, 2, 34, 0).op(STX_W, 10, 4, -8, 0); // sport, dport
    // one small packet (a pure ACK) in 256 takes the IP layer; data never does, so the fast
    // path never reorders a connection's data
    a.op(LDX_W, 4, 6, SKB_LEN, 0).jump(JGT_K, 4, 0, 127, "track");
    a.call(GET_PRANDOM_U32, &[]).op(AND_K, 0, 0, 0, 0xff).jump(JEQ_K, 0, 0, 0, "pass");
    a.label("track");
    // conntrack: options { netns_id = -1 (the skb's), error, l4proto = TCP, dir, zone... }
    a.op(ST_W, 10, 0, -32, -1).op(ST_W, 10, 0, -28, 0).op(ST_W, 10, 0, -24, 6).op(ST_W, 10, 0, -20, 0);
    a.kfunc(types.ct_lookup, &[Reg(6), Stack(-16), Imm(12), Stack(-32), Imm(types.opts_size)]).jump(JEQ_K, 0, 0, 0, "pass");
    a.op(LDX_DW, 8, 0, types.status_offset, 0); // r8 = ct->status
    a.kfunc(types.ct_release, &[Reg(0)]);
    a.op(AND_K, 8, 0, 0, CT_BITS).jump(JNE_K, 8, 0, CT_ASSURED, "pass");
    // the node's route: struct bpf_fib_lookup, zeroed, then family, protocol, ports, ingress
    // index, addresses (tot_len 0: no MTU check, the egress device segments what it must)
    for off in (-96..-32).step_by(8) {
        a.op(ST_DW, 10, 0, off, 0);
    }
    a.op(ST_B, 10, 0, -96, 2).op(ST_B, 10, 0, -95, 6);
    a.op(LDX_H, 4, 10, -8, 0).op(STX_H, 10, 4, -94, 0).op(LDX_H, 4, 10, -6, 0).op(STX_H, 10, 4, -92, 0);
    a.op(LDX_W, 4, 6, SKB_INGRESS_IFINDEX, 0).op(STX_W, 10, 4, -88, 0);
    a.op(LDX_W, 4, 10, -16, 0).op(STX_W, 10, 4, -80, 0).op(LDX_W, 4, 10, -12, 0).op(STX_W, 10, 4, -64, 0);
    a.call(FIB_LOOKUP, &[Reg(6), Stack(-96), Imm(64), Imm(0)]).jump(JNE_K, 0, 0, 0, "pass");
    a.op(LDX_W, 9, 10, -88, 0); // r9 = the egress index
    a.jump(JNE_K, 9, 0, uplink, "pod");
    // to the uplink: only from a pod (the node forwards nothing else between its hosts)
    a.op(LDX_W, 4, 6, SKB_INGRESS_IFINDEX, 0).jump(JEQ_K, 4, 0, uplink, "pass");
    a.jump(JA, 0, 0, 0, "rewrite");
    a.label("pod");
    a.op(STX_W, 10, 9, -104, 0);
    a.op(LD_IMM64, 1, PSEUDO_MAP_FD, 0, pod_links).op(0, 0, 0, 0, 0);
    a.op(MOV_X, 2, 10, 0, 0).op(ADD_K, 2, 0, 0, -104).op(CALL, 0, 0, 0, MAP_LOOKUP_ELEM);
    a.jump(JEQ_K, 0, 0, 0, "pass");
    a.label("rewrite");
    // TTL - 1, its checksum, the MACs the FIB answered (dmac at -38, smac at -44)
    a.op(MOV_X, 8, 7, 0, 0).op(SUB_K, 8, 0, 0, 1).op(STX_H, 10, 8, -100, 0);
    a.call(SKB_STORE_BYTES, &[Reg(6), Imm(22), Stack(-100), Imm(2), Imm(0)]).jump(JNE_K, 0, 0, 0, "drop");
    a.call(L3_CSUM_REPLACE, &[Reg(6), Imm(24), Reg(7), Reg(8), Imm(2)]).jump(JNE_K, 0, 0, 0, "drop");
    a.call(SKB_STORE_BYTES, &[Reg(6), Imm(0), Stack(-38), Imm(6), Imm(0)]).jump(JNE_K, 0, 0, 0, "drop");
    a.call(SKB_STORE_BYTES, &[Reg(6), Imm(6), Stack(-44), Imm(6), Imm(0)]).jump(JNE_K, 0, 0, 0, "drop");
    a.jump(JEQ_K, 9, 0, uplink, "out");
    a.call(REDIRECT_PEER, &[Reg(9), Imm(0)]).op(EXIT, 0, 0, 0, 0);
    a.label("out");
    a.call(REDIRECT, &[Reg(9), Imm(0)]).op(EXIT, 0, 0, 0, 0);
    a.label("drop"); // a half-rewritten packet is not sent on
    a.op(MOV_K, 0, 0, 0, 2).op(EXIT, 0, 0, 0, 0);
    a.label("pass");
    a.op(MOV_K, 0, 0, 0, 0).op(EXIT, 0, 0, 0, 0);
    a.build()
}

// ---------------------------------------------------------------- the node's fast path

/// The loaded program, its map of pod links and the links it is attached by.
pub struct FastPath {
    program: OwnedFd,
    pod_links: OwnedFd,
    attached: Mutex<HashMap<String, (u32, OwnedFd)>>,
}

fn ifindex(dev: &str) -> io::Result<u32> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{dev}/ifindex"))?;
    text.trim().parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("ifindex of {dev}: {text:?}")))
}

/// The device of the node's default route (`/proc/net/route`): the uplink.
fn uplink() -> io::Result<String> {
    let table = std::fs::read_to_string("/proc/net/route")?;
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[1] == "00000000")
        .map(|f| f[0].to_string())
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no default route"))
}

impl FastPath {
    /// Loads the program for this node's network namespace and attaches it to the uplink.
    fn load() -> Result<FastPath, String> {
        let uplink = uplink().map_err(|e| format!("finding the uplink: {e}"))?;
        let uplink_index = ifindex(&uplink).map_err(|e| e.to_string())?;
        let (program, pod_links) = load_program(uplink_index)?;
        let fast = FastPath { program, pod_links, attached: Mutex::new(HashMap::new()) };
        fast.attach(&uplink, false).map_err(|e| format!("attaching to {uplink}: {e}"))?;
        Ok(fast)
    }
}

/// The program for an uplink of index `uplink_index`, checked and loaded by the kernel, and its
/// (empty) map of pod links.
fn load_program(uplink_index: u32) -> Result<(OwnedFd, OwnedFd), String> {
    let blob = std::fs::read("/sys/kernel/btf/vmlinux").map_err(|e| format!("reading the kernel's BTF: {e}"))?;
    let types = kernel_types(&blob)?;
    let map = attr(&[&BPF_MAP_TYPE_HASH.to_le_bytes(), &4u32.to_le_bytes(), &4u32.to_le_bytes(), &65536u32.to_le_bytes()]);
    let pod_links = fd(bpf(BPF_MAP_CREATE, &map).map_err(|e| format!("creating the pod links' map: {e}"))?);
    let code = program(&types, uplink_index as i32, pod_links.as_raw_fd());
    // The kernel lets only GPL-compatible programs call conntrack's functions; the crate is
    // MIT or Apache-2.0, and this generated program is offered as MIT or GPL.
    let license = b"Dual MIT/GPL\0";
    let load = |log: &mut [u8]| {
        // without a log: level, size and buffer all 0 (the kernel refuses a buffer without a size)
        let (level, buffer): (u32, u64) = if log.is_empty() { (0, 0) } else { (1, log.as_mut_ptr() as u64) };
        bpf(BPF_PROG_LOAD, &attr(&[
            &BPF_PROG_TYPE_SCHED_CLS.to_le_bytes(),
            &((code.len() / 8) as u32).to_le_bytes(),
            &(code.as_ptr() as u64).to_le_bytes(),
            &(license.as_ptr() as u64).to_le_bytes(),
            &level.to_le_bytes(),
            &(log.len() as u32).to_le_bytes(),
            &buffer.to_le_bytes(),
            &0u32.to_le_bytes(),
            &0u32.to_le_bytes(),
            b"clusterctl_fast",
            &[0],
        ]))
    };
    let program = match load(&mut []) {
        Ok(raw) => fd(raw),
        Err(e) => {
            // again with the verifier's log, for the reason
            let mut log = vec![0u8; 1 << 16];
            let _ = load(&mut log);
            let text = String::from_utf8_lossy(&log[..log.iter().position(|b| *b == 0).unwrap_or(log.len())]).into_owned();
            let tail: Vec<&str> = text.lines().rev().take(4).collect();
            return Err(format!("loading the program: {e} ({})", tail.into_iter().rev().collect::<Vec<_>>().join(" | ")));
        }
    };
    Ok((program, pod_links))
}

impl FastPath {
    /// Attaches the program to `dev`'s ingress (a pod link: also listed as one).
    fn attach(&self, dev: &str, pod_link: bool) -> io::Result<()> {
        let index = ifindex(dev)?;
        let mut attached = self.attached.lock().unwrap();
        // links of devices that are gone (pods deleted) are dead: drop them, and their map entries
        attached.retain(|name, (index, _)| {
            let alive = super::podnet::link_exists(name);
            if !alive {
                let key = index.to_le_bytes();
                let _ = bpf(BPF_MAP_DELETE_ELEM, &attr(&[&(self.pod_links.as_raw_fd() as u32).to_le_bytes(), &0u32.to_le_bytes(), &(key.as_ptr() as u64).to_le_bytes()]));
            }
            alive
        });
        if attached.get(dev).is_some_and(|(i, _)| *i == index) {
            return Ok(());
        }
        if pod_link {
            let key = index.to_le_bytes();
            let update = attr(&[
                &(self.pod_links.as_raw_fd() as u32).to_le_bytes(),
                &0u32.to_le_bytes(),
                &(key.as_ptr() as u64).to_le_bytes(),
                &(key.as_ptr() as u64).to_le_bytes(),
                &0u64.to_le_bytes(),
            ]);
            bpf(BPF_MAP_UPDATE_ELEM, &update)?;
        }
        let link = attr(&[&(self.program.as_raw_fd() as u32).to_le_bytes(), &index.to_le_bytes(), &BPF_TCX_INGRESS.to_le_bytes(), &0u32.to_le_bytes()]);
        let link = fd(bpf(BPF_LINK_CREATE, &link)?);
        attached.insert(dev.to_string(), (index, link));
        Ok(())
    }
}

static NODE: OnceLock<Option<FastPath>> = OnceLock::new();

/// The node's fast path, loaded on first use (None where the kernel cannot run it: logged once).
/// Also makes conntrack track TCP windows liberally, which the fast path needs.
pub fn node() -> Option<&'static FastPath> {
    NODE.get_or_init(|| {
        if let Err(e) = std::fs::write("/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal", "1") {
            tracing::warn!(error = %e, "cannot make conntrack's TCP window tracking liberal; pods' packets all take the node's IP layer");
            return None;
        }
        match FastPath::load() {
            Ok(fast) => {
                tracing::info!("established connections of pods skip the node's IP layer (tc fast path loaded)");
                Some(fast)
            }
            Err(e) => {
                tracing::warn!(error = %e, "no fast path for pods' established connections; they take the node's IP layer");
                None
            }
        }
    })
    .as_ref()
}

/// Puts the pod link `dev` on the node's fast path, if it has one (a failure is logged: the pod
/// works without it).
pub fn add_pod_link(dev: &str) {
    if let Some(fast) = node()
        && let Err(e) = fast.attach(dev, true)
    {
        tracing::warn!(error = %e, link = dev, "attaching the fast path to a pod link");
    }
}

/// Puts every pod link of the node (`cc*`) on the fast path: those wired before the agent
/// (re)started.
pub fn add_existing_pod_links() {
    if node().is_none() {
        return;
    }
    if let Ok(entries) = std::fs::read_dir("/sys/class/net") {
        for name in entries.flatten().filter_map(|e| e.file_name().into_string().ok()).filter(|n| n.starts_with("cc")) {
            add_pod_link(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_types_are_found_in_its_btf() {
        let Ok(blob) = std::fs::read("/sys/kernel/btf/vmlinux") else { return };
        let types = kernel_types(&blob).expect("conntrack's BPF functions in the kernel's BTF");
        assert!(types.ct_lookup > 0 && types.ct_release > 0 && types.ct_lookup != types.ct_release);
        assert!(types.status_offset > 0 && types.status_offset % 8 == 0, "{types:?}");
        assert!(matches!(types.opts_size, 12 | 16), "{types:?}");
    }

    /// The kernel's verifier accepts the program (loaded, not attached to anything).
    #[test]
    fn the_kernel_accepts_the_program() {
        if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
            return; // a kernel without BTF: the agent runs without the fast path there
        }
        if let Err(e) = load_program(1) {
            panic!("{e}");
        }
    }

    #[test]
    fn jumps_land_on_their_labels() {
        let mut a = Asm::default();
        a.jump(JEQ_K, 0, 0, 0, "end").op(MOV_K, 0, 0, 0, 1).op(MOV_K, 0, 0, 0, 2);
        a.label("end");
        a.op(EXIT, 0, 0, 0, 0);
        let code = a.build();
        assert_eq!(code.len(), 4 * 8);
        assert_eq!(i16::from_le_bytes([code[2], code[3]]), 2, "skips the two moves");
        assert_eq!(code[0], JEQ_K);
    }
}
