//! A model as data: architecture name plus its configuration, as stored in a training run's
//! `config.json`, and the one place that turns it into a concrete network.

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::error::NnError;
use crate::networks::contextnet::ContextNetConfig;
use crate::networks::dt_unet::DtUnetConfig;
use crate::networks::network::{Architecture, Network};
use crate::networks::scunet::ScuNetConfig;
use crate::networks::segnet::SegNetConfig;
use crate::networks::unet::UnetConfig;
use burn::module::Module;

/// The largest number a network configuration may hold (a width in channels, a kernel size).
pub const MAX_CONFIG_NUMBER: u64 = 4096;
/// The most levels (entries of a list) a network configuration may hold.
pub const MAX_CONFIG_LIST: usize = 16;

/// Architecture and configuration of a network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Command-line name (`dt-unet`, `unet`, `segnet`, `contextnet`).
    pub architecture: String,
    /// The architecture's configuration (its `Config` as JSON).
    pub config: serde_json::Value,
}

/// Serialises seeded model construction: burn's random generator is global to the backend,
/// and parameters are initialised lazily, so two models built at once would share draws.
static SEEDED_INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Forces every lazily initialised parameter to take its value now.
struct Materialise;
impl burn::module::ModuleVisitor for Materialise {
    fn visit_float<const D: usize>(
        &mut self,
        param: &burn::module::Param<burn::tensor::Tensor<D>>,
    ) {
        let _ = param.val();
    }
}

fn to_json<T: Serialize>(config: &T) -> serde_json::Value {
    serde_json::to_value(config).unwrap_or(serde_json::Value::Null)
}

fn parse<T: serde::de::DeserializeOwned>(
    model: &'static str,
    value: &serde_json::Value,
) -> Result<T, NnError> {
    serde_json::from_value(value.clone()).map_err(|e| NnError::Config {
        model,
        reason: e.to_string(),
    })
}

impl ModelSpec {
    /// The reference configuration of `architecture`.
    pub fn reference(architecture: Architecture) -> Self {
        let config = match architecture {
            Architecture::DtUnet => to_json(&DtUnetConfig::new()),
            Architecture::Unet => to_json(&UnetConfig::new()),
            Architecture::SegNet => to_json(&SegNetConfig::new()),
            Architecture::ContextNet => to_json(&ContextNetConfig::new()),
            Architecture::ScuNet => to_json(&ScuNetConfig::new()),
        };
        Self {
            architecture: architecture.name().to_string(),
            config,
        }
    }

    pub fn kind(&self) -> Result<Architecture, NnError> {
        Architecture::from_name(&self.architecture).ok_or_else(|| NnError::Config {
            model: "model",
            reason: format!(
                "unknown architecture {:?} (known: dt-unet, unet, segnet, contextnet, scunet)",
                self.architecture
            ),
        })
    }

    /// Change the width (first-level channels, doubling per level) and the depth (number of
    /// resolution levels) of the U-shaped networks; ContextNet takes only a base width.
    pub fn with_overrides(
        mut self,
        width: Option<usize>,
        depth: Option<usize>,
    ) -> Result<Self, NnError> {
        if width.is_none() && depth.is_none() {
            return Ok(self);
        }
        let ladder = |widths: &[usize], cap: Option<usize>| -> Vec<usize> {
            let base = width.unwrap_or(widths[0]);
            let levels = depth.unwrap_or(widths.len());
            (0..levels)
                .map(|i| {
                    let w = base << i;
                    cap.map_or(w, |c| w.min(c.max(base)))
                })
                .collect()
        };
        self.config = match self.kind()? {
            Architecture::DtUnet => {
                let c: DtUnetConfig = parse("dt-unet", &self.config)?;
                let widths = ladder(&c.widths, None);
                to_json(&c.with_widths(widths))
            }
            Architecture::Unet => {
                let c: UnetConfig = parse("unet", &self.config)?;
                let widths = ladder(&c.widths, None);
                to_json(&c.with_widths(widths))
            }
            Architecture::SegNet => {
                let c: SegNetConfig = parse("segnet", &self.config)?;
                // VGG caps the width at 8x the first level (512 for 64).
                let widths = ladder(&c.widths, Some(width.unwrap_or(c.widths[0]) * 8));
                let mut convs = c.convs.clone();
                convs.resize(widths.len(), 3);
                to_json(&c.with_widths(widths).with_convs(convs))
            }
            Architecture::ContextNet => {
                if depth.is_some() {
                    return Err(NnError::Config {
                        model: "contextnet",
                        reason: "its depth is fixed; only the width can be changed".into(),
                    });
                }
                let c: ContextNetConfig = parse("contextnet", &self.config)?;
                let base = width.unwrap_or(c.base_width);
                to_json(&c.with_base_width(base))
            }
            Architecture::ScuNet => {
                return Err(NnError::Config {
                    model: "scunet",
                    reason: "its widths and depth are fixed; neither can be changed".into(),
                });
            }
        };
        Ok(self)
    }

    /// Check a spec read from a file before a network is built from it: a known architecture,
    /// and no number in its configuration over [`MAX_CONFIG_NUMBER`] nor a list longer than
    /// [`MAX_CONFIG_LIST`] (a `config.json` claiming a million channels would otherwise make
    /// the build allocate terabytes).
    pub fn check(&self) -> Result<(), NnError> {
        let kind = self.kind()?;
        fn within(v: &serde_json::Value) -> bool {
            match v {
                serde_json::Value::Number(n) => n
                    .as_f64()
                    .is_some_and(|x| x.abs() <= MAX_CONFIG_NUMBER as f64),
                serde_json::Value::Array(a) => a.len() <= MAX_CONFIG_LIST && a.iter().all(within),
                serde_json::Value::Object(o) => o.values().all(within),
                _ => true,
            }
        }
        if within(&self.config) {
            Ok(())
        } else {
            Err(NnError::Config {
                model: kind.name(),
                reason: format!(
                    "a width or size over {MAX_CONFIG_NUMBER} or a list of more than \
                     {MAX_CONFIG_LIST} levels"
                ),
            })
        }
    }

    /// Build the network on `device` (burn's default initialisation, parameters initialised
    /// lazily; [`Self::build_seeded`] for reproducible weights). The spec is [checked](Self::check)
    /// first.
    pub fn build(&self, device: &Device) -> Result<Network, NnError> {
        self.check()?;
        Ok(match self.kind()? {
            Architecture::DtUnet => {
                Network::from(parse::<DtUnetConfig>("dt-unet", &self.config)?.init(device)?)
            }
            Architecture::Unet => {
                Network::from(parse::<UnetConfig>("unet", &self.config)?.init(device)?)
            }
            Architecture::SegNet => {
                Network::from(parse::<SegNetConfig>("segnet", &self.config)?.init(device)?)
            }
            Architecture::ContextNet => {
                Network::from(parse::<ContextNetConfig>("contextnet", &self.config)?.init(device)?)
            }
            Architecture::ScuNet => {
                Network::from(parse::<ScuNetConfig>("scunet", &self.config)?.init(device)?)
            }
        })
    }
}

impl ModelSpec {
    /// Like [`Self::build`], with initial weights that depend only on `seed`, whatever else
    /// the process is doing.
    pub fn build_seeded(&self, device: &Device, seed: u64) -> Result<Network, NnError> {
        let _guard = SEEDED_INIT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        device.seed(seed);
        let network = self.build(device)?;
        network.visit(&mut Materialise);
        Ok(network)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::model::SegmentationModel;

    fn params(n: Network) -> (usize, usize) {
        (n.trainable_parameters(), n.input_multiple())
    }

    #[test]
    fn reference_specs_round_trip_and_build() {
        let device = Device::default();
        let spec = ModelSpec::reference(Architecture::DtUnet);
        let json = serde_json::to_string(&spec).unwrap();
        let back: ModelSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(params(back.build(&device).unwrap()), (7_782_281, 64));
        let small = back.with_overrides(Some(4), Some(3)).unwrap();
        assert_eq!(small.config["widths"], serde_json::json!([4, 8, 16]));
        assert_eq!(params(small.build(&device).unwrap()).1, 4);
        let bad = ModelSpec {
            architecture: "resnet".into(),
            config: serde_json::Value::Null,
        };
        assert!(
            bad.build(&device)
                .unwrap_err()
                .to_string()
                .contains("resnet")
        );
        let seg = ModelSpec::reference(Architecture::SegNet)
            .with_overrides(Some(4), Some(3))
            .unwrap();
        assert_eq!(seg.config["widths"], serde_json::json!([4, 8, 16]));
        assert_eq!(seg.config["convs"], serde_json::json!([2, 2, 3]));
    }
}
