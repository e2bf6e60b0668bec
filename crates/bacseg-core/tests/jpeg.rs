//! JPEG mammograms: grey read as 8-bit, colour converted to grey with a note.

use bacseg_core::io::{FileFormat, detect_format, load};

#[test]
fn grey_and_colour_jpegs_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let grey = dir.path().join("g.jpg");
    image::GrayImage::from_fn(40, 30, |x, y| image::Luma([(x * 6 + y) as u8]))
        .save(&grey)
        .unwrap();
    assert_eq!(detect_format(&grey).unwrap(), FileFormat::Jpeg);
    let m = load(&grey).unwrap();
    assert_eq!((m.width(), m.height(), m.bits_stored), (40, 30, 8));
    assert!(m.notes.is_empty(), "{:?}", m.notes);
    // JPEG is lossy: values within a few grey levels of the source.
    assert!(
        (m.pixels.get(20, 10) - 130.0).abs() < 6.0,
        "{}",
        m.pixels.get(20, 10)
    );
    let colour = dir.path().join("c");
    image::RgbImage::from_fn(40, 30, |x, _| image::Rgb([200, (x * 5) as u8, 10]))
        .save_with_format(&colour, image::ImageFormat::Jpeg)
        .unwrap();
    let m = load(&colour).unwrap();
    assert_eq!((m.width(), m.height()), (40, 30));
    assert!(m.notes.iter().any(|n| n.contains("grey")), "{:?}", m.notes);
}
