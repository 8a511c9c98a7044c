//! Compiles the seccomp policy (`src/seccomp/policy.rs`) into the BPF program embedded in
//! the library, so no sandbox start pays for building it. The same code runs at test time
//! and must produce the same program (`seccomp::tests`).

#[path = "src/bpf.rs"]
#[allow(dead_code)]
mod bpf;
#[path = "src/seccomp/policy.rs"]
#[allow(dead_code)]
mod policy;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=src/bpf.rs");
    println!("cargo:rerun-if-changed=src/seccomp/policy.rs");
    // The policy uses the syscall numbers of the machine this script runs on.
    let target = std::env::var("CARGO_CFG_TARGET_ARCH")?;
    if target != std::env::consts::ARCH {
        return Err(format!(
            "cross-compiling the seccomp policy is not supported (host {}, target {target})",
            std::env::consts::ARCH
        )
        .into());
    }
    let program = policy::policy().compile()?;
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for insn in &program {
        bytes.extend_from_slice(&insn.code.to_ne_bytes());
        bytes.extend_from_slice(&[insn.jt, insn.jf]);
        bytes.extend_from_slice(&insn.k.to_ne_bytes());
    }
    let out = std::path::Path::new(&std::env::var("OUT_DIR")?).join("seccomp.bpf");
    std::fs::write(out, bytes)?;
    Ok(())
}
