use bacseg_nn::bench::time_train_step_cpu;
use bacseg_nn::cpu::train::TrainNet;
use bacseg_nn::{Device, DtUnetConfig, SegmentationModel};
fn main() {
    let batch: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let reps: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let model = DtUnetConfig::new().init(&Device::default()).unwrap();
    let mut net = TrainNet::from_parts(&model.unet_parts().unwrap()).unwrap();
    let t = time_train_step_cpu(&mut net, batch, 256, reps).unwrap();
    println!("{t:?}");
}
