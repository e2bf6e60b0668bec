//! Commands that run other commands (`demo`, `compare`) do it with exactly the arguments a
//! user would type, parsed by the same clap definitions, and print them first so that every
//! step can be repeated by hand.

use anyhow::Result;
use clap::Parser;

#[derive(Parser)]
struct Synth {
    #[command(flatten)]
    args: crate::cmd::synth::Args,
}

#[derive(Parser)]
struct Train {
    #[command(flatten)]
    args: crate::cmd::train::Args,
}

#[derive(Parser)]
struct Predict {
    #[command(flatten)]
    args: crate::cmd::predict::Args,
}

/// `bacseg CMD PARTS...` as a command line.
pub fn argv<S: AsRef<str>>(cmd: &str, parts: &[S]) -> Vec<String> {
    ["bacseg", cmd]
        .into_iter()
        .map(String::from)
        .chain(parts.iter().map(|p| p.as_ref().to_string()))
        .collect()
}

/// Print what is about to run.
pub fn show(who: &str, step: &str, argv: &[String]) {
    eprintln!("\nbacseg {who}: {step}\n  {}", argv.join(" "));
}

/// The arguments after the subcommand name, as the wrapper parsers expect them.
fn options(argv: &[String]) -> Vec<String> {
    argv.iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, a)| a.clone())
        .collect()
}

pub fn synth(argv: &[String]) -> Result<()> {
    crate::cmd::synth::run(Synth::try_parse_from(options(argv))?.args)
}

pub fn train(argv: &[String]) -> Result<()> {
    crate::cmd::train::run(Train::try_parse_from(options(argv))?.args)
}

pub fn predict(argv: &[String]) -> Result<()> {
    crate::cmd::predict::run(Predict::try_parse_from(options(argv))?.args)
}
