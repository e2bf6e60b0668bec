//! Predict BAC on one mammogram: `cargo run --release -p bacseg --example predict -- RUN IMAGE
//! [OUT.png]` (RUN: a `bacseg train` run directory, or `scunet:` for the published SCU-Net).

use bacseg::{Model, ModelSource, PredictConfig, Predictor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, image, rest @ ..] = args.as_slice() else {
        return Err("usage: predict RUN_DIR|scunet: IMAGE [OUT.png]".into());
    };
    let source = match model.strip_prefix("scunet:") {
        Some(p) => ModelSource::published_scunet((!p.is_empty()).then(|| p.into())),
        None => ModelSource::RunDir(model.into()),
    };
    let model = Model::load(&source)?;
    let config = match model.is_published_scunet() {
        true => PredictConfig::published_scunet(),
        false => PredictConfig::for_model(&model),
    };
    let found =
        Predictor::new(&model, config)?.predict_owned(bacseg::load_image(image.as_ref())?)?;
    let b = &found.burden;
    println!("{image}: {} px, grade {:?}", b.area_px, b.grade);
    if let Some(out) = rest.first() {
        bacseg::core::io::write_mask_png(out.as_ref(), &found.mask)?;
    }
    Ok(())
}
