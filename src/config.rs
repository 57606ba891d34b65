//! Choices a run is configured with that more than one layer reads.

/// The loss a program ends in. Its gradient seeds the backward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Loss {
    /// Sigmoid + binary cross-entropy (the seed's choice).
    Bce,
    /// Soft Dice, per image, averaged.
    Dice,
    /// BCE + soft Dice.
    #[value(name = "bce+dice", alias = "bce-dice")]
    #[serde(rename = "bce+dice")]
    BceDice,
    /// Softmax + cross-entropy over K classes, mean over pixels (models with `--classes K`).
    Ce,
}

impl Loss {
    /// The loss for a model of `classes` classes: `explicit` (from `--loss`) if it suits, else
    /// bce for a binary model and ce for K classes. A loss of the other kind is an error that
    /// says which to use.
    pub fn for_classes(explicit: Option<Loss>, classes: usize) -> anyhow::Result<Loss> {
        let multiclass = classes >= 2;
        match explicit {
            None => Ok(Loss::monitor(classes)),
            Some(l) if l.multiclass() == multiclass => Ok(l),
            Some(Loss::Ce) => anyhow::bail!(
                "--loss ce is softmax cross-entropy over classes: give --classes K (2 or more) for class-id masks, \
                 or use --loss bce, dice or bce+dice for binary masks"
            ),
            Some(l) => anyhow::bail!(
                "--loss {} is for binary masks (one sigmoid output); with --classes {classes} use --loss ce (the default)",
                l.name()
            ),
        }
    }

    /// The loss evaluation reports for a model of `classes` classes: the seed's BCE, or CE.
    pub fn monitor(classes: usize) -> Loss {
        if classes >= 2 {
            Loss::Ce
        } else {
            Loss::Bce
        }
    }

    /// As `--loss` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Loss::Bce => "bce",
            Loss::Dice => "dice",
            Loss::BceDice => "bce+dice",
            Loss::Ce => "ce",
        }
    }

    /// Whether this loss trains K-class (softmax) rather than binary (sigmoid) models.
    pub fn multiclass(self) -> bool {
        self == Loss::Ce
    }
}
