//! `trellis`: the CNI plugin binary. Reads the CNI environment and the network configuration on
//! stdin, prints a result or a CNI error on stdout (exit status 1 on error).

use std::io::Read;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut stdin = String::new();
    // VERSION and STATUS may come without stdin; a read error is reported by the parser as
    // missing configuration where one is needed.
    let _ = std::io::stdin().read_to_string(&mut stdin);
    let out = trellis_cni::commands::run(&|k| std::env::var(k).ok(), &stdin);
    print!("{}", out.stdout);
    if out.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
