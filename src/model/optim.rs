//! AdamW (Loshchilov & Hutter, 2019) whose state can be saved and restored, so that training
//! resumes exactly from a checkpoint. Weight decay applies to convolution and linear weights only,
//! not to batch-norm parameters or biases.

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

struct Param {
    name: String,
    var: Var,
    decay: bool,
    m: Tensor,
    v: Tensor,
}

/// The optimizer.
pub struct AdamW {
    params: Vec<Param>,
    step: usize,
    /// Learning rate of the next step.
    pub learning_rate: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

impl AdamW {
    /// An optimizer over `vars` (name, variable). Batch-norm running statistics must not be
    /// among them: they are buffers, not parameters.
    pub fn new(vars: Vec<(String, Var)>, learning_rate: f64, weight_decay: f64) -> Result<Self> {
        let params = vars
            .into_iter()
            .map(|(name, var)| {
                let decay = name.ends_with("conv.weight") || name.ends_with("head.weight");
                let zeros = var.as_tensor().zeros_like()?;
                Ok(Param {
                    name,
                    decay,
                    m: zeros.clone(),
                    v: zeros,
                    var,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            params,
            step: 0,
            learning_rate,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        })
    }

    /// Steps taken so far.
    pub fn steps(&self) -> usize {
        self.step
    }

    /// Applies one update from `grads`.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let lr = self.learning_rate;
        let correction1 = 1.0 - self.beta1.powi(t);
        let correction2 = 1.0 - self.beta2.powi(t);
        for p in &mut self.params {
            let Some(g) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            // Detached: the gradients carry the step's whole autograd graph, which the moments
            // must not keep alive from one step to the next.
            p.m = ((&p.m * self.beta1)? + (g * (1.0 - self.beta1))?)?.detach();
            p.v = ((&p.v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?.detach();
            let m_hat = (&p.m / correction1)?;
            let v_hat = (&p.v / correction2)?;
            let update = (m_hat / (v_hat.sqrt()? + self.eps)?)?;
            let theta = p.var.as_tensor();
            let theta = if p.decay {
                (theta * (1.0 - lr * self.weight_decay))?
            } else {
                theta.clone()
            };
            p.var.set(&(theta - (update * lr)?)?)?;
        }
        Ok(())
    }

    /// Saves the moments and the step count (safetensors).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for p in &self.params {
            tensors.insert(format!("m.{}", p.name), p.m.clone());
            tensors.insert(format!("v.{}", p.name), p.v.clone());
        }
        tensors.insert(
            "step".to_owned(),
            Tensor::new(&[self.step as f32], &candle_core::Device::Cpu)?,
        );
        candle_core::safetensors::save(&tensors, path)
    }

    /// Restores what [`AdamW::save`] wrote.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let tensors = candle_core::safetensors::load(path, &candle_core::Device::Cpu)?;
        let get = |k: &str| {
            tensors
                .get(k)
                .cloned()
                .ok_or_else(|| candle_core::Error::Msg(format!("optimizer state lacks {k}")))
        };
        for p in &mut self.params {
            p.m = get(&format!("m.{}", p.name))?;
            p.v = get(&format!("v.{}", p.name))?;
        }
        self.step = get("step")?.to_vec1::<f32>()?[0] as usize;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn first_step_moves_each_weight_by_the_learning_rate_against_its_gradient() {
        // With bias correction, Adam's first step is lr * g / (|g| + eps) = lr * sign(g).
        let w = Var::new(&[1.0f32, -2.0, 3.0], &Device::Cpu).unwrap();
        let mut opt = AdamW::new(vec![("conv.weight".into(), w.clone())], 0.1, 0.0).unwrap();
        let loss = (w.as_tensor() * &Tensor::new(&[2.0f32, -1.0, 0.5], &Device::Cpu).unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        opt.step(&loss.backward().unwrap()).unwrap();
        let got = w.as_tensor().to_vec1::<f32>().unwrap();
        for (g, want) in got.iter().zip([0.9f32, -1.9, 2.9]) {
            assert!((g - want).abs() < 1e-5, "{got:?}");
        }
    }

    #[test]
    fn weight_decay_spares_batch_norm_and_state_round_trips() {
        let conv = Var::new(&[1.0f32], &Device::Cpu).unwrap();
        let bn = Var::new(&[1.0f32], &Device::Cpu).unwrap();
        let mut opt = AdamW::new(
            vec![
                ("s.conv.weight".into(), conv.clone()),
                ("s.bn.weight".into(), bn.clone()),
            ],
            0.1,
            0.5,
        )
        .unwrap();
        // Zero gradients: only decay moves the weights.
        let mut grads = GradStore::default();
        for v in [&conv, &bn] {
            grads.insert(v.as_tensor(), v.as_tensor().zeros_like().unwrap());
        }
        opt.step(&grads).unwrap();
        assert!((conv.as_tensor().to_vec1::<f32>().unwrap()[0] - 0.95).abs() < 1e-6);
        assert_eq!(bn.as_tensor().to_vec1::<f32>().unwrap()[0], 1.0);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opt.safetensors");
        opt.save(&path).unwrap();
        let mut restored = AdamW::new(
            vec![
                ("s.conv.weight".into(), conv.clone()),
                ("s.bn.weight".into(), bn.clone()),
            ],
            0.1,
            0.5,
        )
        .unwrap();
        restored.load(&path).unwrap();
        assert_eq!(restored.steps(), 1);
    }
}
