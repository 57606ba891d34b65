//! Test-time augmentation by mirroring (nnU-Net's default): the model sees each image as is
//! and flipped left-right, top-bottom and both; each output is flipped back and the four
//! probability maps are averaged. The average is exactly flip-equivariant whatever the model.

/// A mirroring of a planar image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flip {
    Identity,
    Horizontal,
    Vertical,
    Both,
}

impl Flip {
    /// The four mirrorings averaged by `--tta`.
    pub const ALL: [Flip; 4] = [Flip::Identity, Flip::Horizontal, Flip::Vertical, Flip::Both];

    /// `data` (`[channels, height, width]`, any number of channels) mirrored. Every flip is
    /// its own inverse, so this also flips an output back.
    pub fn apply(self, data: &[f32], height: usize, width: usize) -> Vec<f32> {
        let plane = height * width;
        assert!(
            plane > 0 && data.len().is_multiple_of(plane),
            "flip: {} values are not planes of {height}×{width}",
            data.len()
        );
        let (mirror_x, mirror_y) = match self {
            Flip::Identity => return data.to_vec(),
            Flip::Horizontal => (true, false),
            Flip::Vertical => (false, true),
            Flip::Both => (true, true),
        };
        let mut out = Vec::with_capacity(data.len());
        for c in 0..data.len() / plane {
            for y in 0..height {
                let row = c * plane + if mirror_y { height - 1 - y } else { y } * width;
                if mirror_x {
                    out.extend(data[row..row + width].iter().rev());
                } else {
                    out.extend_from_slice(&data[row..row + width]);
                }
            }
        }
        out
    }
}

/// Element-wise mean of equally long maps.
pub fn mean(maps: &[Vec<f32>]) -> Vec<f32> {
    let n = maps.len() as f32;
    (0..maps[0].len()).map(|k| maps.iter().map(|m| m[k]).sum::<f32>() / n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flips_mirror_each_plane() {
        // 2 channels of 2×3.
        let data: Vec<f32> = (0..12).map(|v| v as f32).collect();
        assert_eq!(Flip::Identity.apply(&data, 2, 3), data);
        assert_eq!(Flip::Horizontal.apply(&data, 2, 3), [2., 1., 0., 5., 4., 3., 8., 7., 6., 11., 10., 9.]);
        assert_eq!(Flip::Vertical.apply(&data, 2, 3), [3., 4., 5., 0., 1., 2., 9., 10., 11., 6., 7., 8.]);
        assert_eq!(Flip::Both.apply(&data, 2, 3), [5., 4., 3., 2., 1., 0., 11., 10., 9., 8., 7., 6.]);
        for f in Flip::ALL {
            assert_eq!(f.apply(&f.apply(&data, 2, 3), 2, 3), data, "{f:?} is not its own inverse");
        }
    }

    #[test]
    fn mean_is_elementwise() {
        assert_eq!(mean(&[vec![1.0, 2.0], vec![3.0, 6.0]]), vec![2.0, 4.0]);
    }
}
