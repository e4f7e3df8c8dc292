//! How the command line is read: one value parser for every boolean option, and the client-only
//! options kept out of the help of commands that do not talk to a server.
use clap::builder::BoolishValueParser;
use clap::{Arg, ArgAction, Command, CommandFactory, FromArgMatches};

use crate::Cli;

/// The value parser of every boolean option, so its environment variable takes the usual
/// spellings: `1/0`, `true/false`, `yes/no`, `on/off` (and `y/n`, `t/f`), in any case.
pub fn boolish() -> BoolishValueParser {
    BoolishValueParser::new()
}

/// Commands that never talk to a running server.
const LOCAL: &[&str] = &["serve", "admin"];

/// Hidden, local stand-ins for the global client options. clap gives a subcommand a global
/// option only when the subcommand has none of that name, so these keep `--url`, `--token` and
/// `--json` out of the help of `serve` and `admin` (and of everything under them), while an old
/// script that passes one is still accepted (and the value ignored).
fn without_client_options(cmd: Command) -> Command {
    cmd.arg(Arg::new("url").long("url").hide(true))
        .arg(Arg::new("token").long("token").hide(true))
        .arg(
            Arg::new("json")
                .long("json")
                .action(ArgAction::SetTrue)
                .hide(true),
        )
}

/// The command line, with the client options hidden under `serve` and `admin`.
pub fn command() -> Command {
    let mut cmd = Cli::command();
    for name in LOCAL {
        cmd = cmd.mut_subcommand(name, without_client_options);
    }
    cmd
}

pub fn parse() -> Cli {
    let matches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}
