//! The parameter store: every trainable `Var` and every buffer of a model under its PyTorch
//! state-dict key, in creation order, and the builder that layers use to create them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use candle_core::{DType, Device, Tensor, Var};
use sconce_core::{Error, Init, Result, SeededRng};

/// A non-trainable tensor that a layer updates (BatchNorm's running statistics and
/// `num_batches_tracked`). Clones share the value.
#[derive(Clone, Debug)]
pub struct Buffer(Arc<RwLock<Tensor>>);

impl Buffer {
    /// A buffer holding `t` (detached).
    pub fn new(t: Tensor) -> Self {
        Self(Arc::new(RwLock::new(t.detach())))
    }

    /// The current value.
    pub fn get(&self) -> Tensor {
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Replaces the value (detached from any graph).
    pub fn set(&self, t: Tensor) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = t.detach();
    }
}

/// One named tensor of a [`ParamStore`].
#[derive(Clone, Debug)]
pub enum Entry {
    /// A trainable parameter.
    Param(Var),
    /// A buffer: saved and loaded with the weights, never trained.
    Buffer(Buffer),
}

impl Entry {
    /// The current value.
    pub fn tensor(&self) -> Tensor {
        match self {
            Entry::Param(v) => v.as_tensor().clone(),
            Entry::Buffer(b) => b.get(),
        }
    }
}

#[derive(Default)]
struct Inner {
    entries: Vec<(String, Entry)>,
    index: HashMap<String, usize>,
}

/// Every parameter and buffer of a model, keyed by its PyTorch state-dict name, in the order
/// the layers created them. Clones share the store.
///
/// Layers get their tensors from a [`Builder`] (see [`ParamStore::builder`]); an optimiser
/// takes [`ParamStore::vars`]; [`ParamStore::load_safetensors`] and
/// [`ParamStore::save_safetensors`] move weights in and out by name.
#[derive(Clone, Default)]
pub struct ParamStore {
    inner: Arc<RwLock<Inner>>,
}

impl std::fmt::Debug for ParamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ParamStore({} tensors, {} parameters)", self.len(), self.num_parameters())
    }
}

impl ParamStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A root builder whose initialisers draw from a [`SeededRng`] seeded with `seed`: the
    /// same seed and the same model give the same weights.
    pub fn builder(&self, seed: u64, dtype: DType, device: &Device) -> Builder {
        Builder {
            store: self.clone(),
            prefix: String::new(),
            rng: Arc::new(Mutex::new(SeededRng::new(seed))),
            dtype,
            device: device.clone(),
            skip_init: false,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self, name: String, entry: Entry) -> Result<()> {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if inner.index.contains_key(&name) {
            return Err(Error::config(
                "parameter name",
                format!("`{name}` is created twice; give each layer its own builder path (Builder::pp)"),
            ));
        }
        let i = inner.entries.len();
        inner.index.insert(name.clone(), i);
        inner.entries.push((name, entry));
        Ok(())
    }

    /// Number of tensors (parameters and buffers).
    pub fn len(&self) -> usize {
        self.read().entries.len()
    }

    /// True when nothing has been created yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every key, in creation order.
    pub fn keys(&self) -> Vec<String> {
        self.read().entries.iter().map(|(k, _)| k.clone()).collect()
    }

    /// The entry named `key`.
    pub fn get(&self, key: &str) -> Option<Entry> {
        let inner = self.read();
        inner.index.get(key).map(|&i| inner.entries[i].1.clone())
    }

    /// Every named entry, in creation order.
    pub fn entries(&self) -> Vec<(String, Entry)> {
        self.read().entries.clone()
    }

    /// The trainable parameters, in creation order.
    pub fn vars(&self) -> Vec<Var> {
        self.named_vars().into_iter().map(|(_, v)| v).collect()
    }

    /// The trainable parameters with their keys, in creation order.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        self.read()
            .entries
            .iter()
            .filter_map(|(k, e)| match e {
                Entry::Param(v) => Some((k.clone(), v.clone())),
                Entry::Buffer(_) => None,
            })
            .collect()
    }

    /// The state dict: every parameter and buffer by key, as PyTorch's `state_dict()`.
    pub fn state_dict(&self) -> Vec<(String, Tensor)> {
        self.read().entries.iter().map(|(k, e)| (k.clone(), e.tensor())).collect()
    }

    /// Number of trainable scalars (PyTorch's `sum(p.numel() for p in model.parameters())`).
    pub fn num_parameters(&self) -> usize {
        self.read()
            .entries
            .iter()
            .map(|(_, e)| match e {
                Entry::Param(v) => v.elem_count(),
                Entry::Buffer(_) => 0,
            })
            .sum()
    }
}

/// Creates parameters and buffers under a key prefix, like PyTorch module paths
/// (`layer1.0.conv1.weight`). Cheap to clone; every clone shares the store and the RNG.
#[derive(Clone)]
pub struct Builder {
    store: ParamStore,
    prefix: String,
    rng: Arc<Mutex<SeededRng>>,
    dtype: DType,
    device: Device,
    skip_init: bool,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Builder({:?}, {:?})", self.prefix, self.dtype)
    }
}

impl Builder {
    /// A builder one level down: `pp("layer1").pp(0)` names `layer1.0.*`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Builder {
        let prefix = if self.prefix.is_empty() { name.to_string() } else { format!("{}.{name}", self.prefix) };
        Builder { prefix, ..self.clone() }
    }

    /// A builder that creates every parameter as zeros instead of running its initialiser:
    /// for counting parameters or for loading weights right after (as `pretrained=True`),
    /// where random initialisation of tens of millions of values would be wasted.
    pub fn skip_init(mut self) -> Builder {
        self.skip_init = true;
        self
    }

    /// The full key of `name` under this builder's prefix.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() { name.to_string() } else { format!("{}.{name}", self.prefix) }
    }

    /// The prefix (empty at the root).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The store this builder fills.
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// The dtype of created parameters.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device of created parameters.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// An independent RNG derived from the shared one (for dropout masks), so a layer's
    /// randomness does not depend on when other layers draw.
    pub fn fork_rng(&self) -> SeededRng {
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        let stream = rng.next_u64();
        rng.fork(stream)
    }

    /// A trainable parameter `name` of `shape`, initialised by `init` from the seeded RNG.
    ///
    /// # Errors
    /// [`Error::Config`] if the key exists already or the initialiser is invalid for the shape.
    pub fn param(&self, name: &str, shape: &[usize], init: Init) -> Result<Var> {
        let t = if self.skip_init {
            Tensor::zeros(shape, self.dtype, &self.device)?
        } else {
            let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
            init.tensor(shape, self.dtype, &self.device, &mut rng)?
        };
        let var = Var::from_tensor(&t)?;
        self.store.insert(self.key(name), Entry::Param(var.clone()))?;
        Ok(var)
    }

    /// A buffer `name` holding `value` (converted to the builder's device).
    ///
    /// # Errors
    /// [`Error::Config`] if the key exists already.
    pub fn buffer(&self, name: &str, value: Tensor) -> Result<Buffer> {
        let b = Buffer::new(value.to_device(&self.device)?);
        self.store.insert(self.key(name), Entry::Buffer(b.clone()))?;
        Ok(b)
    }
}
