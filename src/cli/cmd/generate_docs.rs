//! `isctl generate-docs DIR` (hidden): man pages and shell completions, generated from
//! the same clap definitions that parse the command line, so they cannot drift.

use std::fs;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::args::{Cli, GenerateDocsArgs};
use crate::cli::exit;

pub fn run(args: &GenerateDocsArgs) -> anyhow::Result<u8> {
    let man_dir = args.out_dir.join("man");
    let comp_dir = args.out_dir.join("completions");
    fs::create_dir_all(&man_dir).with_context(|| format!("creating {}", man_dir.display()))?;
    fs::create_dir_all(&comp_dir).with_context(|| format!("creating {}", comp_dir.display()))?;

    let cmd = Cli::command();
    write_man(&cmd, "isctl", &man_dir)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("isctl-{}", sub.get_name());
        write_man(&sub.clone().name(name.clone()), &name, &man_dir)?;
    }

    use clap_complete::Shell;
    for (shell, file) in [
        (Shell::Bash, "isctl.bash"),
        (Shell::Zsh, "_isctl"),
        (Shell::Fish, "isctl.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "isctl", &mut buf);
        let path = comp_dir.join(file);
        fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(exit::OK)
}

fn write_man(cmd: &clap::Command, name: &str, dir: &Path) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    let path = dir.join(format!("{name}.1"));
    fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))
}
