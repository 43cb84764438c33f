# %% [markdown]
r"""
# 3. Template matching: a network designed by hand

Each step of a correlation is an inner product between the kernel and a patch of the image,
and an inner product is large when the two look alike. So a kernel shaped like a pattern is a
**template**: its feature map lights up wherever the image contains that pattern. This is
*template matching* or *matched filtering* (NND chapter 8, Fig. 8.4 - 8.7).

This notebook

1. draws the two classes of Fig. 8.4, a square and a diamond on 15x15 pixels,
2. builds the line templates of Fig. 8.5 and shows the filtered images of Fig. 8.6 and 8.7,
3. solves **Exercise E8.10**: a convolution -> max pooling -> dense softmax network whose every
   weight is *set by hand*, not trained, that tells squares from diamonds, measured on a few
   hundred generated images at random positions and sizes, and
4. shows why it does not care where the shape is (translation invariance).

**What we had to choose.** The chapter describes its figures but the text does not contain
them, so the images and kernels here are our own: the images are 1-pixel outlines (1 = ink,
0 = background); a square is drawn with horizontal and vertical lines, a diamond is the set of
pixels with $|i - i_0| + |j - j_0| = r$ (diagonal lines of single pixels). The kernels of
Fig. 8.5 are taken as 3x3 line templates: **+1 on the line, -1 off it**, for a horizontal, a
vertical and the two diagonal lines.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np

from cnn_im2col.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU, Softmax
from cnn_im2col.model import Sequential
from cnn_im2col.signal import correlate2d

plt.rcParams.update({"figure.dpi": 72, "font.size": 10})
np.set_printoptions(linewidth=110)
SIZE = 15  # images are 15x15, as in Fig. 8.4


def square(side, top, left):
    """A 1-pixel square outline, side x side pixels, top-left corner at (top, left)."""
    img = np.zeros((SIZE, SIZE))
    img[top, left:left + side] = img[top + side - 1, left:left + side] = 1
    img[top:top + side, left] = img[top:top + side, left + side - 1] = 1
    return img


def diamond(radius, row, col):
    """A 1-pixel diamond outline: the pixels with |i - row| + |j - col| == radius."""
    i, j = np.mgrid[:SIZE, :SIZE]
    return (np.abs(i - row) + np.abs(j - col) == radius).astype(float)


# %% [markdown]
r"""
## 1. The two classes (Fig. 8.4)
"""

# %%
sq, dm = square(11, 2, 2), diamond(6, 7, 7)
fig, axes = plt.subplots(1, 2, figsize=(5, 2.6))
for ax, img, name in zip(axes, [sq, dm], ["square", "diamond"]):
    ax.imshow(img, cmap="gray_r")
    ax.set(title=f"{name}, 15x15", xticks=[], yticks=[])
plt.show()

# %% [markdown]
r"""
## 2. Line templates (Fig. 8.5) and the filtered images (Fig. 8.6, 8.7)

Squares are made of horizontal and vertical lines, diamonds of slanted ones. Each kernel
below is +1 along its line and -1 elsewhere, so over a 3-pixel piece of its own line it gives
$3$, and any ink off the line lowers the score.
"""

# %%
horizontal = np.array([[-1, -1, -1], [1, 1, 1], [-1, -1, -1]])
vertical = horizontal.T
diagonal = 2 * np.eye(3, dtype=int) - 1  # "\"
anti_diagonal = np.fliplr(diagonal)  # "/"
kernels = np.array([horizontal, vertical, diagonal, anti_diagonal])
names = ["horizontal", "vertical", "diagonal \\", "diagonal /"]
for k in kernels:  # each is unchanged by a 180-degree turn: convolution = correlation here
    assert np.array_equal(np.rot90(k, 2), k)
print(kernels)

# %% [markdown]
r"""
Correlating each image with each kernel (mode `same`, so the maps stay 15x15): for the
square, horizontal and vertical kernels reach 3 along its sides, and the slanted kernels never
do better than 1 (at the corners). For the diamond it is the other way round. Red is positive,
blue negative; the panel titles give each map's maximum.
"""

# %%
fig, axes = plt.subplots(2, 5, figsize=(11, 4.8))
maxima = {}
for row, (img, shape_name) in enumerate([(sq, "square (Fig. 8.6)"), (dm, "diamond (Fig. 8.7)")]):
    axes[row, 0].imshow(img, cmap="gray_r")
    axes[row, 0].set(title=shape_name, xticks=[], yticks=[])
    for col, (k, name) in enumerate(zip(kernels, names), start=1):
        filtered = correlate2d(img, k, mode="same")
        maxima[shape_name.split()[0], name] = filtered.max()
        axes[row, col].imshow(filtered, cmap="RdBu_r", vmin=-3, vmax=3)
        axes[row, col].set(title=f"{name}: max {filtered.max():.0f}", xticks=[], yticks=[])
plt.tight_layout()
plt.show()

assert [maxima["square", n] for n in names] == [3, 3, 1, 1]
assert [maxima["diamond", n] for n in names] == [1, 1, 3, 3]

# %% [markdown]
r"""
## 3. Exercise E8.10: a network designed, not trained

> *Using the kernels in Figure 8.5, design a convolution network to distinguish between squares
> and diamonds. The network should have a convolution layer, a max pooling layer and a fully
> connected layer with a softmax activation. The input to the network will be a 15x15 image,
> like the images in Figure 8.4. Specify all of the weights and biases in the network.*

The design follows the maxima we just saw:

1. **Convolution**: 4 feature maps, the 4 templates, padding 1 (maps stay 15x15), a tied
   bias of **-2** per map and a ReLU. A neuron fires (value 1) only where its template matches
   perfectly (score 3); partial matches (score <= 2) give 0.
2. **Max pooling** over the whole 15x15 map (window 15): one number per template, "did this
   line appear *anywhere*?". A square gives (1, 1, 0, 0), a diamond (0, 0, 1, 1).
3. **Dense + softmax**: the square's logit is $5\,(h + v - d_{\backslash} - d_{/})$, the
   diamond's its negative, both biases 0. Logits of $\pm 10$ give probabilities of
   $1/(1 + e^{-20}) \approx 1 - 2 \times 10^{-9}$.

In code: the layers with default (random) weights, then every parameter overwritten, stacked
in a `Sequential`. All 50 parameters are printed below.
"""

# %%
conv = Conv2D(1, 4, kernel_size=3, padding=1, bias="tied", dtype=np.float64)
conv.params["weight"][...] = kernels[:, None]  # (4 maps, 1 input channel, 3, 3)
conv.params["bias"][...] = -2.0
dense = Dense(4, 2, dtype=np.float64)
dense.params["weight"][...] = 5 * np.array([[1, 1, -1, -1],  # square
                                            [-1, -1, 1, 1]])  # diamond
dense.params["bias"][...] = 0.0
network = Sequential([conv, ReLU(), MaxPool2D(kernel_size=15), Flatten(), dense, Softmax()])
CLASSES = ["square", "diamond"]


def predict(images):
    """(N, 15, 15) images -> (N, 2) probabilities of [square, diamond]."""
    return network.predict_proba(images[:, None])  # NCHW: one input channel


def pooled_features(images):
    """The 4 numbers the dense layer sees: conv -> ReLU -> max pool -> flatten."""
    out = images[:, None]
    for layer in network.layers[:4]:
        out = layer.forward(out)
    return out


print(network.summary((1, SIZE, SIZE)))
for name, value in network.params.items():
    print(f"\n{name} {value.shape}:\n{value.squeeze()}")
print("\nfeatures of the two examples of Fig. 8.4:\n", pooled_features(np.array([sq, dm])))

# %% [markdown]
r"""
Now test it on generated images: squares with sides from 5 to 15 pixels and diamonds with
radii from 2 to 7, each at a random position where it fits in the 15x15 frame. (Why not
smaller? See the end of the notebook.)
"""

# %%
rng = np.random.default_rng(2024)


def random_shape(kind):
    """One random square (kind 0) or diamond (kind 1) that fits in the frame."""
    if kind == 0:
        side = rng.integers(5, SIZE + 1)
        top, left = rng.integers(0, SIZE - side + 1, size=2)
        return square(side, top, left)
    radius = rng.integers(2, 8)
    row, col = rng.integers(radius, SIZE - radius, size=2)
    return diamond(radius, row, col)


labels = rng.integers(0, 2, size=400)
images = np.array([random_shape(kind) for kind in labels])
probabilities = predict(images)
predicted = probabilities.argmax(axis=1)
accuracy = np.mean(predicted == labels)
print(f"{len(images)} images ({np.sum(labels == 0)} squares, {np.sum(labels == 1)} diamonds): "
      f"accuracy {accuracy:.1%}; lowest probability given to the true class: "
      f"{probabilities[np.arange(len(labels)), labels].min():.9f}")
assert accuracy == 1.0

fig, axes = plt.subplots(2, 8, figsize=(11, 4.2))
for ax, img, p in zip(axes.flat, images, probabilities):
    ax.imshow(img, cmap="gray_r")
    ax.set(title=f"{CLASSES[p.argmax()]}\np={p.max():.4f}", xticks=[], yticks=[])
plt.tight_layout()
plt.show()

# %% [markdown]
r"""
## 4. Why position does not matter

Two properties work together.

- **Convolution is equivariant** to translation: shift the image, and every feature map shifts
  by the same amount (each neuron computes the same thing on its own patch).
- **Max pooling over the whole map is invariant**: a maximum does not care *where* it is.

So the pooled features, and therefore the output, are exactly the same wherever the shape
sits. We check both: a shift commutes with the convolution, and a 7x7 square and a
radius-3 diamond placed at **every** position where they fit (81 positions each) all give
the same four features and the same probabilities.
"""

# %%
shape = square(7, 1, 2)
shifted = np.roll(shape, (3, 4), axis=(0, 1))  # 3 down, 4 right: still inside the frame
maps, maps_shifted = conv.forward(shape[None, None]), conv.forward(shifted[None, None])
inner = (slice(None), slice(None), slice(4, 15), slice(5, 15))  # away from where the roll wrapped
assert np.array_equal(np.roll(maps, (3, 4), axis=(2, 3))[inner], maps_shifted[inner])  # equivariance

everywhere = {
    "square": np.array([square(7, t, l) for t in range(9) for l in range(9)]),
    "diamond": np.array([diamond(3, r, c) for r in range(3, 12) for c in range(3, 12)]),
}
for name, batch in everywhere.items():
    features, probs = pooled_features(batch), predict(batch)
    assert len(batch) == 81 and np.all(features == features[0]) and np.all(probs == probs[0])  # invariance
    print(f"{name} at all {len(batch)} positions: features {features[0]}, P({name}) = {probs[0].max():.9f}")

fig, axes = plt.subplots(2, 6, figsize=(11, 3.9))
for col, t in enumerate([0, 2, 4, 6, 8, 3]):
    img = square(7, t, 8 - t)
    h_map = conv.forward(img[None, None])[0, 0]
    axes[0, col].imshow(img, cmap="gray_r")
    axes[0, col].set(title=f"square at ({t}, {8 - t})", xticks=[], yticks=[])
    axes[1, col].imshow(np.maximum(h_map, 0), cmap="Reds", vmin=0, vmax=1)
    axes[1, col].set(title=f"horizontal map\npooled max {np.maximum(h_map, 0).max():.0f}", xticks=[], yticks=[])
plt.tight_layout()
plt.show()

# %% [markdown]
r"""
The feature map moves with the square; its maximum does not.

## 5. What this design cannot do

A hand-made network is exactly as good as its designer's assumptions. Ours assumed lines at
least 3 pixels long with no other ink beside them, and asked for **perfect** matches (score 3).
Very small shapes break that. In a square of side 4, every 3-pixel stretch of a side has the
neighbouring side inside the window, so the line scores only reach 2 and no feature fires: the
network sees (0, 0, 0, 0) and can only say 50/50. A square of side 3 (a ring around one pixel)
and a radius-1 diamond (4 pixels in a plus) score 1 with *every* template: at that size, 3x3
line templates cannot tell them apart at all.
"""

# %%
tiny = {
    "square, side 3": square(3, 5, 5),
    "square, side 4": square(4, 5, 5),
    "diamond, radius 1": diamond(1, 7, 7),
}
tiny_images = np.array(list(tiny.values()))
raw_scores = conv.forward(tiny_images[:, None]).max(axis=(2, 3)) - conv.params["bias"]  # before bias
for (name, img), score, p in zip(tiny.items(), raw_scores, predict(tiny_images)):
    print(f"{name:<18} template scores {score}  features {pooled_features(img[None])[0]}  "
          f"P(square) = {p[0]:.2f}")
assert np.allclose(predict(tiny_images), 0.5)

# %% [markdown]
r"""
The threshold is a design choice. In the test set a wrong template never scored more than 1
and a right one always scored 3, so any bias between -3 and -1 separates them. Lowering it to
**-1.5** (fire on a score of 2) also catches the side-4 square, and keeps the 400 test images
right; the side-3 square and radius-1 diamond stay undecidable:
"""

# %%
conv.params["bias"][...] = -1.5
assert np.mean(predict(images).argmax(axis=1) == labels) == 1.0
relaxed = predict(tiny_images)
for name, p in zip(tiny, relaxed):
    print(f"{name:<18} P(square) = {p[0]:.4f}")
assert relaxed[1, 0] > 0.99 and np.allclose(relaxed[[0, 2]], 0.5)
conv.params["bias"][...] = -2.0

# %% [markdown]
r"""
Weighing such trade-offs by hand, for thousands of kernels and real images, is what training
does for us: [notebook 4](04_training_mnist.ipynb) lets a network find its own kernels for
handwritten digits.
"""
