//! The sandbox's image: one static program that only waits, made by the agent itself.
//!
//! A pod's sandbox needs a process that holds its network namespace and does nothing else
//! (Kubernetes' `pause`). Nodes never pull, and every image they have is loaded by an operator, so
//! the agent makes this one: a 129-byte x86-64 Linux ELF executable whose code is
//! `loop { pause() }` (the `pause` system call, number 34, in a loop), in a one-file tar imported
//! into the node's Docker as [`IMAGE`]. As PID 1 of its container it ignores the signals it has
//! no handler for, so a sandbox is removed with SIGKILL (`docker rm -f`), never stopped.

use bollard::Docker;
use futures::StreamExt;

/// The sandbox image's name on every node.
pub const IMAGE: &str = "clusterctl/pause:1";
/// The program's path inside the image.
pub const PROGRAM: &str = "/pause";

/// Where the program is loaded (the conventional base of an x86-64 executable).
const BASE: u64 = 0x40_0000;
/// ELF header (64 bytes) and one program header (56 bytes) come before the code.
const CODE_OFFSET: u64 = 64 + 56;
/// `mov eax, 34` (pause); `syscall`; `jmp` back to the `mov` (rel8 -9).
const CODE: [u8; 9] = [0xb8, 0x22, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0xf7];

/// The executable: ELF header, one loadable read+execute segment covering the whole file, code.
pub fn program() -> Vec<u8> {
    let size = CODE_OFFSET + CODE.len() as u64;
    let mut elf = Vec::with_capacity(size as usize);
    // e_ident: magic, 64-bit, little endian, version 1, System V ABI, padding.
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // e_type: executable
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // e_machine: x86-64
    elf.extend_from_slice(&1u32.to_le_bytes()); // e_version
    elf.extend_from_slice(&(BASE + CODE_OFFSET).to_le_bytes()); // e_entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff: no sections
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    elf.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
    elf.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
    elf.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    elf.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
    elf.extend_from_slice(&1u32.to_le_bytes()); // p_type: PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // p_flags: read + execute
    elf.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    elf.extend_from_slice(&BASE.to_le_bytes()); // p_vaddr
    elf.extend_from_slice(&BASE.to_le_bytes()); // p_paddr
    elf.extend_from_slice(&size.to_le_bytes()); // p_filesz
    elf.extend_from_slice(&size.to_le_bytes()); // p_memsz
    elf.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    elf.extend_from_slice(&CODE);
    elf
}

/// A tar archive (ustar) holding one executable file at `name` (a path without the leading `/`).
fn tar_one(name: &str, data: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |field: &mut [u8], value: u64| {
        let text = format!("{value:0width$o}\0", width = field.len() - 1);
        field.copy_from_slice(text.as_bytes());
    };
    octal(&mut header[100..108], 0o755); // mode
    octal(&mut header[108..116], 0); // uid
    octal(&mut header[116..124], 0); // gid
    octal(&mut header[124..136], data.len() as u64); // size
    octal(&mut header[136..148], 0); // mtime
    header[156] = b'0'; // regular file
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field as spaces.
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = header.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0); // padding, then two empty blocks
    out
}

/// The image's root filesystem.
pub fn image_tar() -> Vec<u8> {
    tar_one(PROGRAM.trim_start_matches('/'), &program())
}

/// Imports [`IMAGE`] into `docker` unless it is there.
pub async fn ensure_image(docker: &Docker) -> Result<(), String> {
    if !cfg!(target_arch = "x86_64") {
        return Err("the pod sandbox's program exists only for x86-64 nodes".into());
    }
    if docker.inspect_image(IMAGE).await.is_ok() {
        return Ok(());
    }
    let (repo, tag) = IMAGE.split_once(':').unwrap_or((IMAGE, "latest"));
    let options = bollard::query_parameters::CreateImageOptionsBuilder::default().from_src("-").repo(repo).tag(tag).build();
    let mut progress = docker.create_image(Some(options), Some(bollard::body_full(image_tar().into())), None);
    while let Some(step) = progress.next().await {
        step.map_err(|e| format!("importing {IMAGE}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tar_holds_the_program_with_a_valid_header_checksum() {
        let tar = image_tar();
        assert_eq!(tar.len() % 512, 0);
        assert_eq!(&tar[..5], b"pause");
        let mut header = tar[..512].to_vec();
        let stored = u32::from_str_radix(std::str::from_utf8(&header[148..154]).unwrap(), 8).unwrap();
        header[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, header.iter().map(|b| u32::from(*b)).sum::<u32>());
        assert_eq!(&tar[512..512 + 4], b"\x7fELF");
        assert_eq!(program().len(), 129);
    }

    /// The program runs on this machine and waits until killed.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_program_runs_and_waits() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pause");
        std::fs::write(&path, program()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut child = std::process::Command::new(&path).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(child.try_wait().unwrap().is_none(), "it is still waiting");
        child.kill().unwrap();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9));
    }
}
