//! Compiles the XDP program `xdp/vrouter_xdp.c` into `$OUT_DIR/vrouter_xdp.o` with clang
//! (`clang -O2 -g -target bpf`; `-g` emits the BTF that BTF-defined maps need). The object is
//! embedded into the binary by `src/xdp.rs`.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "xdp/vrouter_xdp.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let obj = out.join("vrouter_xdp.o");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    let arch_include = format!(
        "/usr/include/{}-linux-gnu",
        env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".to_string())
    );
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
        .arg(format!("-I{arch_include}"))
        .args(["-c", src, "-o"])
        .arg(&obj)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{clang} failed to compile {src}: {s}"),
        Err(e) => panic!(
            "cannot run {clang} to compile {src}: {e}; install clang and libbpf-dev \
             (or set CLANG to a clang that targets bpf)"
        ),
    }
}
