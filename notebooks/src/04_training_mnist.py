# %% [markdown]
r"""
# 4. Training a small network on MNIST

In notebook 3 we *designed* the kernels. Here a network **learns** its own, from 20,000
handwritten digits, in well under a minute on two CPU cores. Then we look inside: the learned
first-layer filters, the feature maps of one digit at every layer, the confusion matrix, and
the test digits the network gets most confidently wrong.

The network is a small LeNet-style stack (NND Fig. 8.11): two groups of convolution, ReLU and
2x2 max pooling, then a fully connected layer, a ReLU and the 10 output neurons, one per
digit. It ends in raw scores (*logits*); the loss, `SoftmaxCrossEntropy`, applies the softmax
itself (in a numerically safe way). `predict` returns those logits, as the network computes them,
and `predict_proba` their softmax: the probability of each digit.
"""

# %%
import time

import matplotlib.pyplot as plt
import numpy as np

from cnn_im2col.datasets import load_mnist
from cnn_im2col.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from cnn_im2col.losses import SoftmaxCrossEntropy
from cnn_im2col.model import Sequential
from cnn_im2col.optim import Adam

plt.rcParams.update({"figure.dpi": 72, "font.size": 10})

# %% [markdown]
r"""
## 1. The data

`load_mnist()` gives 60,000 training and 10,000 test images as float32 arrays of shape
(N, 1, 28, 28), pixels in [0, 1], and integer labels. To keep this notebook fast we train on
the first 20,000 training images, hold out the last 1,000 to watch progress while training
(*validation*), and measure the final result on all 10,000 test images, which the network
never sees while training.
"""

# %%
(x_train, y_train), (x_test, y_test) = load_mnist()
assert x_train.shape == (60000, 1, 28, 28) and x_test.shape == (10000, 1, 28, 28)
x_fit, y_fit = x_train[:20000], y_train[:20000]
x_val, y_val = x_train[-1000:], y_train[-1000:]

fig, axes = plt.subplots(1, 10, figsize=(8, 1.2))
for ax, img, label in zip(axes.flat, x_fit, y_fit):
    ax.imshow(img[0], cmap="gray_r")
    ax.set(title=str(label), xticks=[], yticks=[])
plt.tight_layout()
plt.show()
print("training digits per class:", np.bincount(y_fit))

# %% [markdown]
r"""
## 2. The network

`summary` lists each layer with the shape of its output for one image, and its number of
parameters. Every shape follows Eq. 8.18: 28 - 5 + 1 = 24, pooled to 12; 12 - 5 + 1 = 8,
pooled to 4; 32 maps of 4x4 are 512 numbers for the dense layer. (The seeds make the initial
weights, and so the whole run, reproducible.)
"""

# %%
model = Sequential([
    Conv2D(1, 16, kernel_size=5, seed=1), ReLU(), MaxPool2D(2),
    Conv2D(16, 32, kernel_size=5, seed=2), ReLU(), MaxPool2D(2),
    Flatten(),
    Dense(32 * 4 * 4, 64, seed=3), ReLU(),
    Dense(64, 10, seed=4),
])
print(model.summary((1, 28, 28)))

# %% [markdown]
r"""
## 3. Training

`fit` runs the loop of notebook 2 on minibatches of 64 images: forward pass, loss, backward
pass, and an `Adam` step on every weight. To draw learning curves with more than one point per
epoch, we hand `fit` the shuffled training set 4,000 images at a time, and it measures the
validation images after each slice. Two epochs: every training image is seen twice, the
second time with smaller steps (a learning rate of 0.0005 instead of 0.002) to settle in.
"""

# %%
optimizer, loss = Adam(lr=2e-3), SoftmaxCrossEntropy()
rng = np.random.default_rng(0)
curve = {"images seen": [], "loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
seen, start = 0, time.perf_counter()
for epoch, lr in enumerate([2e-3, 5e-4]):
    optimizer.lr = lr
    order = rng.permutation(len(x_fit))
    for part in np.array_split(order, 5):  # 5 slices of 4,000 images per epoch
        history = model.fit(x_fit[part], y_fit[part], epochs=1, batch_size=64, optimizer=optimizer,
                            loss=loss, validation_data=(x_val, y_val), seed=seen, progress=False, log=None)
        seen += len(part)
        curve["images seen"].append(seen)
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            curve[key].append(history[key][-1])
    print(f"epoch {epoch + 1}: training loss {curve['loss'][-1]:.3f}, "
          f"validation accuracy {curve['val_accuracy'][-1]:.2%}")
print(f"trained on {seen:,} images in {time.perf_counter() - start:.0f} s")

# %%
fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.4))
ax_loss.plot(curve["images seen"], curve["loss"], "o-", label="training (mean over the slice)")
ax_loss.plot(curve["images seen"], curve["val_loss"], "s-", label="validation")
ax_loss.set(xlabel="training images seen", ylabel="cross-entropy loss", yscale="log", title="loss")
ax_acc.plot(curve["images seen"], curve["accuracy"], "o-", label="training (mean over the slice)")
ax_acc.plot(curve["images seen"], curve["val_accuracy"], "s-", label="validation")
ax_acc.set(xlabel="training images seen", ylabel="accuracy", ylim=(0.8, 1), title="accuracy")
for ax in (ax_loss, ax_acc):
    ax.axvline(len(x_fit), color="gray", ls=":", lw=1)
    ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
r"""
The loss falls fast over the first few thousand images, then slowly. (The dotted line marks the
end of the first epoch, where the learning rate drops.) In the second epoch the training loss
keeps falling while the validation loss levels off: the network starts to fit its own 20,000
images a little better than images it has not seen, the first sign of *over-fitting*. The gap
is small and validation accuracy has not started to fall, so two epochs is a fair place to stop.

## 4. How good is it? The test set
"""

# %%
test = model.evaluate(x_test, y_test)
probabilities = model.predict_proba(x_test)
predicted = probabilities.argmax(axis=1)
print(f"test accuracy {test['accuracy']:.2%}, test loss {test['loss']:.3f} "
      f"({np.sum(predicted != y_test)} of {len(y_test)} test digits wrong)")
assert np.isclose(test["accuracy"], np.mean(predicted == y_test))
assert test["accuracy"] > 0.97

# %% [markdown]
r"""
## 5. What the first layer learned

Each first-layer filter is a 5x5 template (red: positive weight, blue: negative), like the
hand-made line templates of notebook 3, but found by gradient descent. The same seed rebuilds
the layer's *initial* random weights, so we can put each filter next to where it started. In
two short epochs training moves these weights by only about a quarter of their size (printed
below), so they still look much like their random start: most of the adapting happens in the
layers above. What a filter does is easier to see in its feature map for one test digit (bottom
row, after the ReLU; dark = strong response): some filters pick out the horizontal bar of the
7, others its slanted stroke, others one *side* of a stroke, an edge.
"""

# %%
digit, label = x_test[:1], y_test[0]
filters = model[0].params["weight"][:, 0]  # (16, 5, 5)
initial = Conv2D(1, 16, kernel_size=5, seed=1).params["weight"][:, 0]  # the same seed: the start
first_maps = model[1].forward(model[0].forward(digit))[0]  # conv + ReLU: (16, 24, 24)
change = np.linalg.norm(filters - initial) / np.linalg.norm(initial)
print(f"training changed the first-layer weights by {change:.0%} of their initial size")

fig, axes = plt.subplots(3, 16, figsize=(11, 2.8))
limit = np.abs(filters).max()
for k in range(16):
    axes[0, k].imshow(initial[k], cmap="RdBu_r", vmin=-limit, vmax=limit)
    axes[1, k].imshow(filters[k], cmap="RdBu_r", vmin=-limit, vmax=limit)
    axes[2, k].imshow(first_maps[k], cmap="gray_r")
    for ax in axes[:, k]:
        ax.set(xticks=[], yticks=[])
for ax, name in zip(axes[:, 0], ["at start", "learned", f"map of a {label}"]):
    ax.set_ylabel(name, rotation=0, ha="right", va="center")
plt.tight_layout()
plt.show()

# %% [markdown]
r"""
## 6. One digit through every layer

`Sequential` is just its layers applied in order, so we can run them one at a time and keep
every intermediate result. Each block below is the output of one stage for the same digit: the
maps get smaller (pooling) and more numerous (32 filters in the second convolution), less like
the picture and more like a description of it. The last rows are the 64 hidden neurons of the
dense layer and the 10 output probabilities.
"""

# %%
outputs = [digit]
for layer in model:
    outputs.append(layer.forward(outputs[-1]))
assert np.allclose(outputs[-1], model.forward(digit))
stages = [  # (index into outputs, title): outputs[i] is the output of layer i - 1
    (2, "conv 1 + ReLU: 16 maps, 24x24"),
    (3, "max pool: 16 maps, 12x12"),
    (5, "conv 2 + ReLU: 32 maps, 8x8"),
    (6, "max pool: 32 maps, 4x4"),
]
fig = plt.figure(figsize=(9.5, 7.4))
subfigs = fig.subfigures(6, 1, height_ratios=[1, 1, 1.7, 1.7, 0.6, 1.9])
for sub, (index, title) in zip(subfigs, stages):
    maps = outputs[index][0]
    axes = sub.subplots(len(maps) // 16, 16, squeeze=False)
    for ax, m in zip(axes.flat, maps):
        ax.imshow(m, cmap="gray_r")
        ax.set(xticks=[], yticks=[])
    sub.suptitle(title)
ax = subfigs[4].subplots()
ax.imshow(outputs[9], cmap="gray_r", aspect="auto")
ax.set(xticks=[], yticks=[], title="dense + ReLU: 64 hidden neurons")
ax_in, ax_out = subfigs[5].subplots(1, 2, gridspec_kw={"width_ratios": [1, 4]})
ax_in.imshow(digit[0, 0], cmap="gray_r")
ax_in.set(xticks=[], yticks=[], title=f"the input: a {label}")
probs = model.predict_proba(digit)[0]
ax_out.bar(range(10), probs, color=["tab:green" if d == probs.argmax() else "tab:gray" for d in range(10)])
ax_out.set(xticks=range(10), ylim=(0, 1), xlabel="digit", ylabel="probability",
           title="output: softmax of the 10 logits")
plt.show()

# %% [markdown]
r"""
## 7. Which digits get confused? The confusion matrix

Row = the true digit, column = the network's answer; the diagonal counts the right answers. To
make the mistakes visible, the off-diagonal cells are coloured on their own scale.
"""

# %%
confusion = np.zeros((10, 10), dtype=int)
np.add.at(confusion, (y_test, predicted), 1)
assert confusion.sum() == len(y_test) and np.trace(confusion) == np.sum(predicted == y_test)

mistakes = confusion - np.diag(np.diag(confusion))
fig, ax = plt.subplots(figsize=(6.2, 5.4))
ax.imshow(mistakes, cmap="Reds")
for (i, j), n in np.ndenumerate(confusion):
    color = "tab:green" if i == j else "white" if n > 0.6 * mistakes.max() else "black"
    ax.text(j, i, n, ha="center", va="center", fontsize=8, color=color)
ax.set(xticks=range(10), yticks=range(10), xlabel="predicted", ylabel="true",
       title="test set: counts (green: correct)")
plt.show()
worst = np.unravel_index(mistakes.argmax(), mistakes.shape)
print(f"most frequent confusion: {worst[0]} read as {worst[1]} ({mistakes[worst]} times)")

# %% [markdown]
r"""
## 8. The most confident mistakes

Finally, the test digits the network got wrong while being most sure of itself. Many are
digits a person would hesitate over too: strokes that are missing, extra, or written the way
another digit is.
"""

# %%
wrong = np.flatnonzero(predicted != y_test)
confidence = probabilities[wrong, predicted[wrong]]
most_confident = wrong[np.argsort(confidence)[::-1][:12]]

fig, axes = plt.subplots(2, 6, figsize=(9, 3.9))
for ax, i in zip(axes.flat, most_confident):
    ax.imshow(x_test[i, 0], cmap="gray_r")
    ax.set(title=f"true {y_test[i]}, said {predicted[i]}\np = {probabilities[i, predicted[i]]:.3f}",
           xticks=[], yticks=[])
plt.tight_layout()
plt.show()

# %% [markdown]
r"""
## 9. Taking the model elsewhere: ONNX

A trained network is only useful where it can run. `cnn_im2col.onnx.export` writes it in ONNX,
the format that deployment runtimes read, with a batch axis of any size. We run the file in
onnxruntime (a different engine with its own convolution code) on all 10,000 test images and
compare: the outputs should agree to rounding, and so every prediction. Reading the file back
with `cnn_im2col.onnx.load` gives the same network again. (This needs the `onnx` and
`onnxruntime` packages: `pip install "cnn-im2col[onnx]"`.)
"""

# %%
import importlib.util
import os
import tempfile

if importlib.util.find_spec("onnx") is None or importlib.util.find_spec("onnxruntime") is None:
    print('onnx or onnxruntime is not installed: pip install "cnn-im2col[onnx]" to run this cell')
else:
    import onnxruntime

    from cnn_im2col import onnx as cnn_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mnist.onnx")
        cnn_onnx.export(model, path, input_shape=(1, 28, 28))
        print(f"wrote {os.path.getsize(path) / 1024:.0f} KiB: "
              + ", ".join(node.op_type for node in cnn_onnx.to_onnx(model, (1, 28, 28)).graph.node))
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        theirs = np.concatenate([session.run(None, {"input": x_test[i:i + 1000]})[0]
                                 for i in range(0, len(x_test), 1000)])
        reloaded = cnn_onnx.load(path)
    ours = np.concatenate([model.forward(x_test[i:i + 1000]) for i in range(0, len(x_test), 1000)])
    difference = np.abs(theirs - ours).max()
    agree = np.mean(theirs.argmax(axis=1) == predicted)
    print(f"onnxruntime vs cnn_im2col on the 10,000 test images: largest difference of a logit "
          f"{difference:.2g} (logits up to {np.abs(ours).max():.0f}); the same prediction for {agree:.2%}")
    assert difference < 1e-3 and agree == 1.0
    assert np.array_equal(reloaded.forward(x_test[:1000]), ours[:1000])

# %% [markdown]
r"""
**Summary.** From "what is a feature map" (notebook 1), through the gradients that train it
(notebook 2) and hand-made templates (notebook 3), to a network that taught itself its
templates and reads handwritten digits with about 98% accuracy after seeing 20,000 of them
twice. Training longer on all 60,000 images (the `cnn-im2col train` command) goes past 99%.
"""
