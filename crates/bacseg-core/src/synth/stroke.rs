//! Rasterising polylines: for every pixel near a curve, the signed distance to it and the arc
//! length of the closest point. Profiles are then evaluated once per pixel from these two
//! numbers, so joints between segments are never drawn twice and widths can vary along the
//! curve.

/// A curve in pixel coordinates (pixel `(x, y)` has its centre at `(x + 0.5, y + 0.5)`),
/// with the arc length at each vertex.
#[derive(Debug, Clone, Default)]
pub(crate) struct Polyline {
    pub pts: Vec<[f32; 2]>,
    pub arc: Vec<f32>,
}

impl Polyline {
    pub fn push(&mut self, p: [f32; 2]) {
        let s = match (self.pts.last(), self.arc.last()) {
            (Some(q), Some(&s)) => s + ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2)).sqrt(),
            _ => 0.0,
        };
        self.pts.push(p);
        self.arc.push(s);
    }

    pub fn len(&self) -> f32 {
        self.arc.last().copied().unwrap_or(0.0)
    }

    /// Point and unit tangent at arc length `s` (clamped to the curve).
    pub fn at(&self, s: f32) -> ([f32; 2], [f32; 2]) {
        let n = self.pts.len();
        if n < 2 {
            return (self.pts.first().copied().unwrap_or([0.0, 0.0]), [1.0, 0.0]);
        }
        let i = match self.arc.binary_search_by(|a| a.total_cmp(&s)) {
            Ok(i) => i.min(n - 2),
            Err(i) => i.saturating_sub(1).min(n - 2),
        };
        let (a, b) = (self.pts[i], self.pts[i + 1]);
        let seg = (self.arc[i + 1] - self.arc[i]).max(1e-6);
        let t = ((s - self.arc[i]) / seg).clamp(0.0, 1.0);
        let dir = [(b[0] - a[0]) / seg, (b[1] - a[1]) / seg];
        ([a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])], dir)
    }
}

/// Scratch buffers the size of the image, reused by every stroke of one image. Only the
/// pixels a stroke touched are visited and reset, so a stroke costs O(its area).
#[derive(Debug)]
pub(crate) struct StrokeCanvas {
    width: usize,
    height: usize,
    dist: Vec<f32>,
    arc: Vec<f32>,
    touched: Vec<u32>,
}

impl StrokeCanvas {
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            dist: vec![f32::INFINITY; width * height],
            arc: vec![0.0; width * height],
            touched: Vec::new(),
        }
    }

    /// Call `f(pixel index, signed distance, arc length)` once for every pixel whose centre
    /// lies within `reach` pixels of `line`. The distance is negative on the left of the
    /// direction of travel (x right, y down).
    pub fn stroke(&mut self, line: &Polyline, reach: f32, mut f: impl FnMut(usize, f32, f32)) {
        let (w, h) = (self.width as i64, self.height as i64);
        for i in 0..line.pts.len().saturating_sub(1) {
            let (a, b) = (line.pts[i], line.pts[i + 1]);
            let (s0, s1) = (line.arc[i], line.arc[i + 1]);
            let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
            let len2 = (dx * dx + dy * dy).max(1e-12);
            let x0 = ((a[0].min(b[0]) - reach).floor() as i64).max(0);
            let x1 = ((a[0].max(b[0]) + reach).ceil() as i64).min(w - 1);
            let y0 = ((a[1].min(b[1]) - reach).floor() as i64).max(0);
            let y1 = ((a[1].max(b[1]) + reach).ceil() as i64).min(h - 1);
            for y in y0..=y1 {
                let py = y as f32 + 0.5;
                let row = y as usize * self.width;
                for x in x0..=x1 {
                    let px = x as f32 + 0.5;
                    let (qx, qy) = (px - a[0], py - a[1]);
                    let t = ((qx * dx + qy * dy) / len2).clamp(0.0, 1.0);
                    let (ex, ey) = (qx - t * dx, qy - t * dy);
                    let d = (ex * ex + ey * ey).sqrt();
                    if d > reach {
                        continue;
                    }
                    let p = row + x as usize;
                    let old = self.dist[p];
                    if d < old.abs() {
                        if old.is_infinite() {
                            self.touched.push(p as u32);
                        }
                        let side = if dx * qy - dy * qx < 0.0 { -1.0 } else { 1.0 };
                        self.dist[p] = side * d;
                        self.arc[p] = s0 + t * (s1 - s0);
                    }
                }
            }
        }
        for &p in &self.touched {
            let p = p as usize;
            f(p, self.dist[p], self.arc[p]);
            self.dist[p] = f32::INFINITY;
        }
        self.touched.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn straight_line_distances_and_arc() {
        let mut line = Polyline::default();
        for i in 0..=10 {
            line.push([2.0 + i as f32 * 2.0, 10.5]);
        }
        assert!((line.len() - 20.0).abs() < 1e-4);
        let mut canvas = StrokeCanvas::new(32, 24);
        let mut seen = vec![0u32; 32 * 24];
        canvas.stroke(&line, 3.0, |p, d, s| {
            seen[p] += 1;
            let (x, y) = ((p % 32) as f32 + 0.5, (p / 32) as f32 + 0.5);
            if (2.0..=22.0).contains(&x) {
                assert!((d.abs() - (y - 10.5).abs()).abs() < 1e-4);
                assert!((s - (x - 2.0)).abs() < 1e-4);
                // Left of travel (towards +x) is up (smaller y).
                if y < 10.5 {
                    assert!(d < 0.0);
                }
            }
        });
        // Every pixel at most once, including at the joints.
        assert!(seen.iter().all(|&c| c <= 1));
        assert_eq!(seen[10 * 32 + 12], 1);
        assert_eq!(seen[20 * 32 + 12], 0);
        // The canvas is clean for the next stroke.
        assert!(canvas.dist.iter().all(|d| d.is_infinite()));
    }
}
