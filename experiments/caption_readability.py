"""What can be read from the frozen text encoder's caption features? Linear read-outs on world captions.

A DiT gets a caption's content two ways: cross-attention to the token embeddings, and one pooled
vector in the adaLN conditioning. This fits a softmax-regression read-out (full-batch Adam, held-out
accuracy) of the colour, start place and motion direction from (a) the mean over the caption's
tokens and (b) the mean over its last six tokens, where the motion phrase sits, on the raw features
(what the DiT's first layer sees) and standardised per feature (the best case for a linear read-out).
A fact that only standardisation recovers sits in low-variance directions: there, but slow to learn.

    python experiments/caption_readability.py --num_captions=1200
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from sorajax.data.world import WorldOptions, generate_clip
from sorajax.logging_setup import quiet_library_logs
from sorajax.models.text_encoder import load_pretrained_text_encoder, sentence_embeddings

_NUM = flags.DEFINE_integer("num_captions", 1200, "world captions; the last quarter is held out")
_STEPS = flags.DEFINE_integer("steps", 500, "Adam steps of the read-out")
_LAST = 6  # tokens before [SEP] that hold "... moves quickly up and to the left"


def held_out_accuracy(features: np.ndarray, labels: list[str], steps: int, standardise: bool) -> float:
    """Softmax regression on the first 3/4 (features optionally standardised on it), accuracy on the rest."""
    classes = sorted(set(labels))
    y = np.array([classes.index(label) for label in labels])
    split = len(y) * 3 // 4
    if standardise:
        features = (features - features[:split].mean(0)) / (features[:split].std(0) + 1e-6)
    x = jnp.asarray(features, jnp.float32)
    params = {"w": jnp.zeros((x.shape[1], len(classes))), "b": jnp.zeros(len(classes))}
    optimizer = optax.adamw(1e-2, weight_decay=1e-3)

    def loss(p):
        logits = x[:split] @ p["w"] + p["b"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(y[:split])).mean()

    @jax.jit
    def step(p, state):
        grads = jax.grad(loss)(p)
        updates, state = optimizer.update(grads, state, p)
        return optax.apply_updates(p, updates), state

    state = optimizer.init(params)
    for _ in range(steps):
        params, state = step(params, state)
    predicted = np.asarray(jnp.argmax(x[split:] @ params["w"] + params["b"], axis=-1))
    return float((predicted == y[split:]).mean())


def main(argv: list[str]) -> None:
    del argv
    quiet_library_logs()
    options = WorldOptions(max_objects=1, occluder_prob=0.0, pan_prob=0.0, gravity_prob=0.0)
    clips = [generate_clip(0, 9, 64, 64, options, index=i) for i in range(_NUM.value)]
    captions = [c.caption for c in clips]
    facts = {
        "colour": [c.facts.main_object.colour for c in clips],
        "start place": [c.caption.split(" starts ")[1].split(" and ")[0] for c in clips],
        "direction": [c.facts.main_object.direction for c in clips],
    }
    embeddings, mask = load_pretrained_text_encoder().encode(captions)
    lengths = np.asarray(mask).sum(axis=1)
    embeddings = np.asarray(embeddings)
    pooled = {
        "mean of all tokens": np.asarray(sentence_embeddings(embeddings, mask)),
        f"mean of last {_LAST} tokens": np.stack(
            [embeddings[i, n - 1 - _LAST: n - 1].mean(axis=0) for i, n in enumerate(lengths)]),
    }
    print(f"held-out linear read-out accuracy, {len(clips)} world captions (chance: 1 / classes);"
          " raw features / standardised per feature")
    for pool_name, features in pooled.items():
        for fact, labels in facts.items():
            raw = held_out_accuracy(features, labels, _STEPS.value, standardise=False)
            standardised = held_out_accuracy(features, labels, _STEPS.value, standardise=True)
            print(f"  {pool_name:>22} -> {fact:<11} {100 * raw:5.1f}% / {100 * standardised:5.1f}%"
                  f"  ({len(set(labels))} classes)")


if __name__ == "__main__":
    app.run(main)
