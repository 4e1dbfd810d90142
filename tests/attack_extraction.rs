//! Model extraction without the service: the thief against a local victim under each output
//! policy, and PRADA on its queries and on a benign client's.

use std::path::Path;

use vigil::error::Result;
use vigil::ml::attack::extraction::{Answer, Judge, Oracle, ThiefConfig, benign_queries, steal};
use vigil::ml::attack::prada::{Prada, PradaConfig};
use vigil::ml::data::preprocess::{Pipeline, PreparedData};
use vigil::ml::data::{RawInputs, load};
use vigil::ml::model::Network;
use vigil::ml::train::{Silent, TrainControl, load_trained, train};
use vigil::store::{CheckpointKind, RunStore};

/// The victim as a client sees it: raw inputs in, labels and some probabilities out.
struct Local<'a> {
    net: &'a Network,
    pipeline: &'a Pipeline,
    /// 0: full; k: top k; usize::MAX: label only.
    top: usize,
    prada: Option<&'a mut Prada>,
    raised_at: Option<usize>,
    seen: usize,
}

impl Oracle for Local<'_> {
    fn query(&mut self, inputs: &[Vec<f32>]) -> Result<Vec<Answer>> {
        let rows: Vec<f32> = inputs.iter().flat_map(|r| self.pipeline.transform(r).unwrap()).collect();
        let mut dims = vec![inputs.len()];
        dims.extend(self.pipeline.input.dims());
        let x = candle_core::Tensor::from_vec(rows.clone(), dims, &candle_core::Device::Cpu)?;
        let p = vigil::ml::model::softmax(&self.net.forward(&x, None)?)?.to_vec2::<f32>()?;
        let d = self.pipeline.input.numel();
        Ok(p.into_iter()
            .enumerate()
            .map(|(i, p)| {
                let mut ranked: Vec<(usize, f32)> = p.iter().copied().enumerate().collect();
                ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
                let label = ranked[0].0;
                self.seen += 1;
                if let Some(pr) = self.prada.as_deref_mut()
                    && pr.observe(&rows[i * d..(i + 1) * d], label).raised
                {
                    self.raised_at = Some(self.seen);
                }
                let shown = match self.top {
                    0 => p.iter().copied().enumerate().collect(),
                    usize::MAX => vec![],
                    k => ranked.into_iter().take(k).collect(),
                };
                Answer { label, shown }
            })
            .collect())
    }
}

#[test]
fn the_thief_is_caught_early_the_benign_client_never_and_agreement_grows() {
    let dir = tempfile::tempdir().unwrap();
    let store = RunStore::new(dir.path());
    let s = vigil::ml::spec::resolve("digits-mlp", Path::new("models")).unwrap().0;
    let run = store.create(&s).unwrap();
    train(&run, false, &mut Silent, &TrainControl::default()).unwrap();
    let t = load_trained(&run, CheckpointKind::Best).unwrap();
    let data = PreparedData::build(&t.spec, Some(&t.pipeline)).unwrap();
    let ds = load(&t.spec.data.source).unwrap();
    let split = PreparedData::split_of(&t.spec, &ds);
    let RawInputs::Dense { values, shape } = &ds.inputs else { panic!() };
    let d = shape.numel();
    let raw = |i: usize| values[i * d..(i + 1) * d].to_vec();
    let test: Vec<Vec<f32>> = split.test.iter().map(|&i| raw(i)).collect();
    let (_, victim, _) = vigil::ml::train::predict(&t.network, &data.test).unwrap();

    // Benign: 10,000 natural queries (training and validation digits, shifted and noisy).
    let pool: Vec<Vec<f32>> = split.train.iter().chain(&split.validation).map(|&i| raw(i)).collect();
    // PRADA as the service keeps it, and with reservoirs small enough to bind within these
    // queries (32 per class, 1,000 distances): the approximation must keep both verdicts.
    let capped = PradaConfig { max_per_class: 32, max_pooled: 1000, ..PradaConfig::default() };
    let seeds: Vec<Vec<f32>> = split.validation.iter().take(10).map(|&i| raw(i)).collect();
    let world = World {
        net: &t.network,
        pipeline: &t.pipeline,
        pool: &pool,
        shape,
        seeds: &seeds,
        test: &test,
        victim: &victim,
    };
    world.benign_and_thieves(PradaConfig::default(), &[("full", 0), ("top-3", 3), ("label", usize::MAX)]);
    // The thief's substitute is what the policies change; one policy is enough for the caps.
    world.benign_and_thieves(capped, &[("full", 0)]);
}

/// The victim, the benign client's pool and the thief's seeds.
struct World<'a> {
    net: &'a Network,
    pipeline: &'a Pipeline,
    pool: &'a [Vec<f32>],
    shape: &'a vigil::ml::data::InputShape,
    seeds: &'a [Vec<f32>],
    test: &'a [Vec<f32>],
    victim: &'a [u32],
}

impl World<'_> {
    /// A benign client never alarms PRADA; the thief, under each of `policies`, within 300
    /// queries, and its substitute's agreement grows.
    fn benign_and_thieves(&self, config: PradaConfig, policies: &[(&str, usize)]) {
        let (shape, test, victim) = (self.shape, self.test, self.victim);
        let mut prada = Prada::new(config);
        let mut benign = Local {
            net: self.net,
            pipeline: self.pipeline,
            top: 0,
            prada: Some(&mut prada),
            raised_at: None,
            seen: 0,
        };
        for chunk in benign_queries(self.pool, shape, 10_000, 1).chunks(256) {
            benign.query(chunk).unwrap();
        }
        let raised = benign.raised_at;
        eprintln!("benign ({config:?}): W after 10,000 queries {:?}, alarm at {raised:?}", prada.w());
        assert_eq!(raised, None, "a benign client raised the alarm ({config:?})");

        // The thief, from 10 validation digits, under each output policy.
        for &(name, top) in policies {
            let mut prada = Prada::new(config);
            let mut o = Local {
                net: self.net,
                pipeline: self.pipeline,
                top,
                prada: Some(&mut prada),
                raised_at: None,
                seen: 0,
            };
            let cfg = ThiefConfig::default();
            let points = steal(
                &mut o,
                self.seeds,
                shape,
                10,
                Judge { inputs: test, victim_labels: victim },
                &cfg,
                |_| {},
            )
            .unwrap();
            let raised = o.raised_at;
            eprintln!(
                "thief ({name}, {config:?}): alarm at {raised:?}, W {:?}, agreement {points:?}",
                prada.w()
            );
            assert!(raised.is_some_and(|q| q <= 300), "{name}: alarm at {raised:?} ({config:?})");
            assert!(points.last().unwrap().agreement > points[0].agreement, "{name}: {points:?}");
        }
    }
}
