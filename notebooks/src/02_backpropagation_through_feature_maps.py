# %% [markdown]
r"""
# 2. Backpropagation through feature maps

Training a network needs the gradient of the cost $C$ with respect to every weight, every
bias and every input of a layer. This notebook derives them for one feature map, following the
primer's running example (a **3x3 input** and a **2x2 overlay**, hence a 2x2 feature map), and
checks each one three ways:

- the primer's formula, written with `scipy.signal`-style correlations and convolutions;
- the engine (`cnn_im2col.layers`), which computes the same thing with im2col and GEMMs;
- **finite differences**: nudge one number by $\pm\epsilon$, rerun the forward pass, and
  measure how much $C$ moves: $\partial C/\partial x \approx (C(x+\epsilon) - C(x-\epsilon)) / 2\epsilon$.

Then the same for max pooling (the primer's 4x5 example), average pooling with a weight
(Eq. 8.22 and its gradients, P8.3 and P8.4), and tied vs untied biases.

Everything here is float64: finite differences need the precision.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np

from cnn_im2col.gradcheck import check_layer, numerical_gradient
from cnn_im2col.im2col import col2im, im2col
from cnn_im2col.layers import AvgPool2D, Conv2D, MaxPool2D, Sigmoid
from cnn_im2col.signal import convolve2d, correlate2d

plt.rcParams.update({"figure.dpi": 72, "font.size": 10})
np.set_printoptions(precision=5, suppress=True, linewidth=110)


def show_numbers(ax, a, title, cmap="RdBu_r", fmt="{:.3f}", boxes=None):
    """A small matrix as (light) coloured cells with its numbers written in; optional red boxes."""
    vmax = 1.6 * max(abs(a).max(), 1e-12)  # 1.6: keep the colours light enough to read on
    ax.imshow(a, cmap=cmap, vmin=-vmax if cmap == "RdBu_r" else 0, vmax=vmax)
    for (i, j), v in np.ndenumerate(a):
        ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=9)
    for i, j in [] if boxes is None else zip(*np.nonzero(boxes)):
        ax.add_patch(plt.Rectangle((j - 0.45, i - 0.45), 0.9, 0.9, fill=False, ec="tab:red", lw=2))
    ax.set(title=title, xticks=[], yticks=[])


# %% [markdown]
r"""
## 1. The forward pass of one feature map

The primer's `FeatureMap`:

```python
z = correlate2d(a_prev, w, mode="valid") + b      # 3x3 input, 2x2 weights -> 2x2 map
a = sigmoid(z)
```

We use the 3x3 input of Appendix A (divided by 10, so the sigmoid is not saturated), the
weights `[[1, 2], [3, 4]] / 10`, a bias of -0.5, and the primer's quadratic cost against a target
`y`: $C = \tfrac12 \sum (a - y)^2$, so $\partial C/\partial a = a - y$.

In the engine this is a `Conv2D` layer with one input and one output map, a **tied** bias (one
number for the whole map) and a `Sigmoid` layer. Its arrays are NCHW: (batch, channels, rows,
columns), so our 3x3 input is a (1, 1, 3, 3) array.
"""

# %%
a_prev = np.array([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]]) / 10
w = np.array([[1.0, 2], [3, 4]]) / 10
b = -0.5
y = np.array([[0.0, 1], [1, 0]])

conv = Conv2D(1, 1, kernel_size=2, bias="tied", dtype=np.float64)
conv.params["weight"][...] = w  # in place: the layer keeps its arrays (and we can nudge them)
conv.params["bias"][...] = b
act = Sigmoid()
x = a_prev.reshape(1, 1, 3, 3)  # a view: nudging a_prev nudges x


def cost():
    a = act.forward(conv.forward(x))[0, 0]
    return 0.5 * np.sum((a - y) ** 2)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def sigmoid_prime(z):
    return sigmoid(z) * (1 - sigmoid(z))


z = correlate2d(a_prev, w, mode="valid") + b  # the primer's forward pass
a = sigmoid(z)
assert np.allclose(conv.forward(x)[0, 0], z) and np.isclose(cost(), 0.5 * np.sum((a - y) ** 2))
print("z =\n", z, "\na = sigmoid(z) =\n", a, "\nC =", cost())

# %% [markdown]
r"""
Now one backward pass through the engine: $\partial C/\partial a = a - y$ goes into the
sigmoid, which multiplies it by $\sigma'(z)$; the result $\partial C/\partial z$ goes into the
convolution, which returns $\partial C/\partial a^{L-1}$ and fills `conv.grads` with
$\partial C/\partial w$ and $\partial C/\partial b$.
"""

# %%
_ = cost()  # a forward pass at the unperturbed point fills the layers' caches
dC_da = a - y
dC_dz = act.backward(dC_da.reshape(1, 1, 2, 2))  # (1, 1, 2, 2)
dC_dx = conv.backward(dC_dz)  # (1, 1, 3, 3)
engine = {"bias": conv.grads["bias"][0], "weight": conv.grads["weight"][0, 0], "input": dC_dx[0, 0]}

# %% [markdown]
r"""
## 2. The bias gradient

Each neuron of the map has $\partial C/\partial b_k = \sigma'(z_k)\,\partial C/\partial a_k$: a 2x2
matrix of **bias gradient components**. The four neurons share one bias, so (as if one neuron
had seen four inputs in a row) the components add up. The primer writes that sum as a `valid`
correlation of two 2x2 matrices, which is a single number:

```python
b_gradient_components = sigmoid_prime(z) * a_gradient
b_gradient = correlate2d(sigmoid_prime(z), a_gradient, mode="valid")
```

(In the NND chapter this is Eq. 8.36: $db = \sum_{i,j} dn_{i,j}$.)
"""

# %%
b_gradient_components = sigmoid_prime(z) * dC_da
assert np.allclose(b_gradient_components, dC_dz[0, 0])  # what the engine's sigmoid passed back

b_gradient = correlate2d(sigmoid_prime(z), dC_da, mode="valid")
assert b_gradient.shape == (1, 1)
numeric_b = numerical_gradient(cost, conv.params["bias"])[0]
assert np.isclose(b_gradient[0, 0], b_gradient_components.sum())
assert np.isclose(engine["bias"], b_gradient[0, 0]) and np.isclose(engine["bias"], numeric_b, rtol=1e-7)
print(f"primer {b_gradient[0, 0]:.10f}   engine {engine['bias']:.10f}   finite differences {numeric_b:.10f}")

# %% [markdown]
r"""
## 3. The weight gradient

Weight $w_{i,j}$ multiplies, in neuron $k$, the input cell under it. So neuron $k$ contributes
its bias component times its 2x2 **underlay**, and the four contributions add up. That sum is
the `valid` correlation of the 3x3 input with the 2x2 matrix of bias components (Eq. 8.48:
$dW = dZ \otimes A$):

```python
w_gradient = correlate2d(a_prev, b_gradient_components, mode="valid")
```
"""

# %%
contributions = [b_gradient_components[m, n] * a_prev[m:m + 2, n:n + 2] for m in range(2) for n in range(2)]
w_gradient = correlate2d(a_prev, b_gradient_components, mode="valid")
numeric_w = numerical_gradient(cost, conv.params["weight"])[0, 0]
assert np.allclose(w_gradient, sum(contributions))
assert np.allclose(engine["weight"], w_gradient) and np.allclose(engine["weight"], numeric_w, rtol=1e-7)
print("primer:\n", w_gradient, "\nengine:\n", engine["weight"], "\nfinite differences:\n", numeric_w)

# %% [markdown]
r"""
The engine got the same matrix from one GEMM: its forward pass kept the im2col matrix of the
input (one row per neuron, the neuron's underlay), and $dW = dZ^\top \cdot \mathrm{cols}$ is
exactly "each neuron's component times its underlay, summed":
"""

# %%
cols = im2col(x, kernel_size=2)  # (4 neurons, 4 pixels of the underlay)
assert np.allclose((b_gradient_components.reshape(1, 4) @ cols).reshape(2, 2), w_gradient)
print(cols)

# %% [markdown]
r"""
## 4. The gradient for the previous layer's activations

Input cell $a^{L-1}_{u,v}$ feeds every neuron whose overlay covers it, multiplied by the
weight sitting over it. So neuron $k$ sends back its bias component times the 2x2 weights,
placed on its own overlay, and zeros elsewhere: four 3x3 matrices, which add up. In pictures:
"""

# %%
components = []
for m in range(2):
    for n in range(2):
        part = np.zeros((3, 3))
        part[m:m + 2, n:n + 2] = b_gradient_components[m, n] * w  # this neuron's overlay
        components.append(part)
a_prev_gradient = convolve2d(w, b_gradient_components, mode="full")  # the primer's line
assert np.allclose(sum(components), a_prev_gradient)

fig, axes = plt.subplots(1, 5, figsize=(12, 2.8))
for k, (ax, part) in enumerate(zip(axes, components)):
    show_numbers(ax, part, f"neuron ({k // 2}, {k % 2}):\n{b_gradient_components.flat[k]:.3f} x w")
show_numbers(axes[4], a_prev_gradient, "sum = dC/da_prev")
plt.tight_layout()
plt.show()

# %% [markdown]
r"""
That sum is a **full** convolution (the primer) of the weights with the bias components:

```python
a_prev_gradient = convolve2d(w, b_gradient_components, mode="full")
```

The NND chapter writes the same thing as Eq. 8.45, $dA = (\mathrm{rot180}\,W) \otimes dZ$: a full
*correlation* of $dZ$ with the kernel rotated by 180 degrees. (Convolution is correlation
with a rotated kernel, and convolution commutes, so these are the same.) And it is the
transpose of the forward pass: going forward, $\mathrm{vec}(Z) = M\,\mathrm{vec}(A)$ with the
weight-sharing matrix $M$ of Eq. 8.12; going back, $\mathrm{vec}(dA) = M^\top \mathrm{vec}(dZ)$,
just as a dense layer multiplies by $W^\top$ on the way back.
"""


# %%
def weight_sharing_matrix(w, input_shape):
    """Eq. 8.12 (column-stacking vec): vec(correlate(P, w, 'valid')) == M @ vec(P)."""
    (R_r, R_c), (r, c) = input_shape, w.shape
    S_r, S_c = R_r - r + 1, R_c - c + 1
    M = np.zeros((S_r * S_c, R_r * R_c))
    for m in range(S_r):
        for n in range(S_c):
            for i in range(r):
                for j in range(c):
                    M[m + n * S_r, (m + i) + (n + j) * R_r] = w[i, j]
    return M


M = weight_sharing_matrix(w, (3, 3))
assert np.allclose(M @ a_prev.ravel("F"), (z - b).ravel("F"))  # forward: Eq. 8.12
eq_8_45 = correlate2d(b_gradient_components, np.rot90(w, 2), mode="full")
transpose = (M.T @ b_gradient_components.ravel("F")).reshape(3, 3, order="F")
numeric_a = numerical_gradient(cost, a_prev)

for name, value in [("primer: convolve2d(w, dz, 'full')", a_prev_gradient),
                    ("Eq. 8.45: correlate2d(dz, rot180(w), 'full')", eq_8_45),
                    ("transpose of Eq. 8.12: M.T @ vec(dz)", transpose),
                    ("engine (GEMM + col2im)", engine["input"])]:
    assert np.allclose(value, numeric_a, rtol=1e-7, atol=1e-10), name
    print(f"{name:<46} max |difference from finite differences| = {abs(value - numeric_a).max():.1e}")

# %% [markdown]
r"""
The engine never builds $M$ nor rotates a kernel. Its forward pass was
`cols @ w.ravel()`; its backward pass multiplies the other way, `dz_rows @ w` (one row of 4
numbers per neuron: that neuron's component times the weights, the same four overlays as in the
picture above), and **col2im** scatter-adds each row back onto the pixels it came from:
"""

# %%
dcols = b_gradient_components.reshape(4, 1) @ w.reshape(1, 4)  # (4 neurons, 4 cells of the overlay)
dx_engine_way = col2im(dcols, (1, 1, 3, 3), kernel_size=2)
assert np.allclose(dx_engine_way[0, 0], a_prev_gradient)
print(dcols, "\n-> col2im ->\n", dx_engine_way[0, 0])

# %% [markdown]
r"""
Finite differences also vouch for a bigger layer: 3 input maps, 2 output maps, a 3x3 kernel,
padding 1 and stride 2, a batch of 2 (`check_layer` compares every entry of $dX$, $dW$ and $db$
with finite differences and returns the worst relative error of each):
"""

# %%
rng = np.random.default_rng(0)
layer = Conv2D(3, 2, kernel_size=3, stride=2, padding=1, dtype=np.float64, seed=0)
errors = check_layer(layer, rng.standard_normal((2, 3, 7, 7)))
assert max(errors.values()) < 1e-6
print({name: f"{error:.1e}" for name, error in errors.items()})

# %% [markdown]
r"""
## 5. Max pooling: the gradient goes to the winner (the primer's 4x5 example)

A max-pooling neuron passes on the largest activation under its overlay. On the way back, its
gradient goes to that one input neuron, and the other inputs under the overlay get 0: they did
not affect the cost. The primer's `MaxPoolingMap` slides a 2x2 overlay with **stride 1**, so
the windows overlap, and an input that wins several windows collects all their gradients.
The engine's `MaxPool2D(2, stride=1)` does the same.
"""

# %%
pool_input = np.array([[8.0, 0, 11, 1, 6], [10, 2, 4, 14, 17], [5, 16, 19, 15, 7], [12, 13, 9, 18, 3]])
pool = MaxPool2D(kernel_size=2, stride=1)
pooled = pool.forward(pool_input[None, None])[0, 0]
assert np.array_equal(pooled, [[10, 11, 14, 17], [16, 19, 19, 17], [16, 19, 19, 18]])
print(pooled)


# %%
def primer_max_pool_backward(a_prev, a_gradient, overlay=(2, 2)):
    """The primer's MaxPoolingMap.propagate_backward, for a stride-1 overlay."""
    a_prev_gradient = np.zeros(a_prev.shape)
    for r in range(a_gradient.shape[0]):
        for c in range(a_gradient.shape[1]):
            window = a_prev[r:r + overlay[0], c:c + overlay[1]]
            i, j = np.unravel_index(window.argmax(), window.shape)
            a_prev_gradient[r + i, c + j] += a_gradient[r, c]
    return a_prev_gradient


ones = pool.backward(np.ones((1, 1, 3, 4)))[0, 0]  # how many windows each input wins
expected_wins = np.zeros((4, 5))
for value, wins in [(10, 1), (11, 1), (14, 1), (17, 2), (16, 2), (19, 4), (18, 1)]:
    expected_wins[pool_input == value] = wins
assert np.array_equal(ones, expected_wins)

upstream = rng.standard_normal((3, 4))
routed = pool.backward(upstream[None, None])[0, 0]
assert np.allclose(routed, primer_max_pool_backward(pool_input, upstream))
assert max(check_layer(MaxPool2D(2, stride=1), pool_input[None, None].copy()).values()) < 1e-6

fig, axes = plt.subplots(1, 3, figsize=(11, 2.8))
show_numbers(axes[0], pool_input, "4x5 input (red: a window's max)", cmap="Greys", fmt="{:.0f}", boxes=ones > 0)
show_numbers(axes[1], pooled, "2x2 max, stride 1 -> 3x4", cmap="Greys", fmt="{:.0f}")
show_numbers(axes[2], ones, "gradient of sum(output):\nwindows won by each input", cmap="Greens", fmt="{:.0f}")
plt.tight_layout()
plt.show()

# %% [markdown]
r"""
19 wins all four windows that contain it, 16 and 17 win two each; 0, 1, 2, ... win nothing and
get no gradient. (All values here are distinct. On a tie the engine gives the gradient to the
first maximum in row-major order within the window, like `argmax`.)

The NND chapter's max pooling (Eq. 8.24) uses non-overlapping windows: stride = window size.
On the same input a 2x2 window with stride 2 fits twice down and twice across (the fifth
column is left over, Eq. 8.18), and each input gets at most one gradient:
"""

# %%
pool2 = MaxPool2D(kernel_size=2)  # stride defaults to the window size
out2 = pool2.forward(pool_input[None, None])[0, 0]
assert np.array_equal(out2, [[10, 14], [16, 19]])
wins2 = pool2.backward(np.ones((1, 1, 2, 2)))[0, 0]
assert wins2.sum() == 4 and wins2.max() == 1 and np.array_equal(pool_input[wins2 == 1], [10, 14, 16, 19])
print(out2, "\n", wins2)

# %% [markdown]
r"""
## 6. Average pooling with a weight (Eq. 8.22, P8.3, P8.4)

The NND chapter's average pooling has one trainable weight $w$ per feature map: each output is
the **sum** of an $r \times c$ window times $w$ (windows do not overlap):

$$z_{i,j} = \Big\{ \sum_{k=1}^{r}\sum_{l=1}^{c} v_{r(i-1)+k,\,c(j-1)+l} \Big\}\, w$$

Its two gradients (solved problems P8.3 and P8.4):

- $dA = w \boxtimes^{ave}_{r,c} dZ$: each element of $dZ$, times $w$, is copied to all
  $r \times c$ inputs of its window (the window's inputs all touched that output with factor $w$);
- $dw = \sum_{i,j} dz_{i,j} \cdot (\text{sum of window } i,j)$.

In the engine: `AvgPool2D(2, trainable_scale=True, channels=1)`, whose `params["weight"]` is
$w$ (it starts at 1/4, which makes it the plain mean).
"""

# %%
v = np.arange(16.0).reshape(4, 4)
avg = AvgPool2D(kernel_size=2, trainable_scale=True, channels=1, dtype=np.float64)
assert np.allclose(avg.params["weight"], 0.25)
avg.params["weight"][...] = 0.5  # w

window_sums = v.reshape(2, 2, 2, 2).sum(axis=(1, 3))  # [[0+1+4+5, ...], ...]
zz = avg.forward(v[None, None])[0, 0]
assert np.allclose(zz, 0.5 * window_sums)  # Eq. 8.22

dZ = np.array([[1.0, -2], [3, 0.5]])
dA = avg.backward(dZ[None, None])[0, 0]
assert np.allclose(dA, 0.5 * np.kron(dZ, np.ones((2, 2))))  # P8.3: expand each dz to 2x2, times w
dw = avg.grads["weight"][0]
assert np.isclose(dw, np.sum(dZ * window_sums))  # P8.4
print("window sums:\n", window_sums, "\nz = w * sums:\n", zz, "\ndA (P8.3):\n", dA, "\ndw (P8.4):", dw)
assert max(check_layer(avg, v[None, None].copy()).values()) < 1e-6  # and finite differences agree

# %% [markdown]
r"""
## 7. Tied vs untied bias

So far the bias was **tied**: one number per feature map, shared by all its neurons, so its
gradient is the sum over the whole map (and over the batch). The NND chapter's Fig. 8.1 also
has the **untied** bias: one bias per output neuron, a matrix the size of the feature map.
Its gradient is the neuron's own $\partial C/\partial z$, summed over the batch only. An
untied layer has more parameters and is tied to one input size (the engine asks for
`input_size`); with the same weights, the tied bias gradient is the untied one summed over the
map.
"""

# %%
x5 = rng.standard_normal((4, 1, 5, 5))  # a batch of 4 images, 5x5
tied = Conv2D(1, 2, kernel_size=3, bias="tied", dtype=np.float64, seed=1)
untied = Conv2D(1, 2, kernel_size=3, bias="untied", input_size=(5, 5), dtype=np.float64, seed=1)
assert np.array_equal(tied.params["weight"], untied.params["weight"])  # same seed, same weights
print("tied bias:", tied.params["bias"].shape, "  untied bias:", untied.params["bias"].shape)

dout = rng.standard_normal((4, 2, 3, 3))
tied.forward(x5)
untied.forward(x5)
tied.backward(dout)
untied.backward(dout)
assert np.allclose(tied.grads["bias"], dout.sum(axis=(0, 2, 3)))  # Eq. 8.36, plus the batch
assert np.allclose(untied.grads["bias"], dout.sum(axis=0))  # one gradient per neuron
assert np.allclose(tied.grads["bias"], untied.grads["bias"].sum(axis=(1, 2)))
for layer in (tied, untied):
    errors = check_layer(layer, x5.copy())
    assert max(errors.values()) < 1e-6
    n_params = sum(p.size for p in layer.params.values())
    worst = {name: f"{error:.1e}" for name, error in errors.items()}
    print(f"{layer!r}: {n_params} parameters; worst relative errors {worst}")

try:
    untied.forward(rng.standard_normal((1, 1, 6, 6)))
except ValueError as error:
    print("untied bias on a 6x6 input:", error)

# %% [markdown]
r"""
**Summary.** For a feature map $z = w \otimes a + b$:

| gradient | primer | NND chapter | engine |
|---|---|---|---|
| $\partial C/\partial b$ | sum of the components $\sigma'(z)\,\partial C/\partial a$ | Eq. 8.36 | `dz.sum()` |
| $\partial C/\partial w$ | `correlate2d(a_prev, dz, "valid")` | Eq. 8.48 | `dz_rows.T @ cols` |
| $\partial C/\partial a^{L-1}$ | `convolve2d(w, dz, "full")` | Eq. 8.45 (rot180) | `col2im(dz_rows @ w)` |

Max pooling routes each gradient to its window's winner; average pooling spreads it, times
$w$, over the window. Next, [notebook 3](03_template_matching.ipynb) uses feature maps as
template detectors, with weights set by hand.
"""
