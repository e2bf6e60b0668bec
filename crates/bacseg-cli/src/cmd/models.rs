//! `bacseg models`: the segmentation architectures, with trainable parameters, forward cost per
//! 512x512 patch and reference configuration.

use anyhow::Result;
use bacseg_nn::{Architecture, Device, ModelSummary};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON (schema: docs/cli.md#models) instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let device = Device::default();
    let summaries = Architecture::ALL
        .into_iter()
        .map(|arch| arch.reference_summary(&device))
        .collect::<Result<Vec<ModelSummary>, _>>()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summaries)?);
        return Ok(());
    }
    println!(
        "{:<12}{:>13}{:>14}  config",
        "name", "parameters", "GFLOP/patch"
    );
    for s in &summaries {
        println!(
            "{:<12}{:>13}{:>14.2}  {}",
            s.name,
            group_thousands(s.parameters),
            s.gflop_per_patch,
            serde_json::to_string(&s.config)?
        );
    }
    println!(
        "GFLOP/patch: forward convolutions on one in_channels x 512 x 512 patch (2 FLOP per multiply-add)"
    );
    Ok(())
}

fn group_thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::group_thousands;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(group_thousands(7_782_281), "7,782,281");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1,000");
    }
}
