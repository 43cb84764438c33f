# %% [markdown]
r"""
# 1. Convolution as matrix multiplication

A **feature map** is what you get when you slide a small grid of weights (the *overlay*,
*filter* or *kernel*) across an image and, at every position, multiply the weights with the
pixels underneath and add the products up. Each position gives one neuron of the feature map;
every neuron uses **the same** weights.

This notebook shows, with numbers you can check:

1. correlation vs convolution and the `valid` / `full` / `same` modes (the primer's Appendix A),
2. how several input channels are stacked (the primer's Appendix B),
3. how padding and stride set the output size (Eq. 8.18 of the NND chapter),
4. that a convolution *is* a matrix multiplication (Eq. 8.12), and why `cnn_im2col` computes
   it as **im2col followed by one GEMM** (general matrix multiply) instead,
5. what the im2col matrix of a real MNIST digit looks like.

Every claim is an `assert`: if this notebook runs to the end, the claims hold.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle
from scipy import signal as sps

from cnn_im2col.datasets import load_mnist
from cnn_im2col.functional import conv2d_forward
from cnn_im2col.im2col import im2col
from cnn_im2col.layers import Conv2D
from cnn_im2col.signal import convolve2d, correlate2d

plt.rcParams.update({"figure.dpi": 72, "image.cmap": "gray_r", "font.size": 10})
np.set_printoptions(linewidth=110)

# %% [markdown]
r"""
## 1. One feature map, by hand

Place the overlay `w` (r x c) at the top-left of the input `p`, multiply cell by cell, add
up: that is neuron `z[0, 0]`. Move one step right for `z[0, 1]`, and so on (Eq. 8.13):

$$z_{m,n} = \sum_{i}\sum_{j} w_{i,j}\, p_{m+i,\,n+j}$$

An M x N input and an I x J overlay give an (M-I+1) x (N-J+1) feature map; the primer's
example: a 4x5 input and a 2x2 overlay give a 3x4 map.
"""


# %%
def correlate_by_hand(p, w):
    """Slide w over p; each position is the sum of the overlay times the underlay."""
    r, c = w.shape
    z = np.zeros((p.shape[0] - r + 1, p.shape[1] - c + 1))
    for m in range(z.shape[0]):
        for n in range(z.shape[1]):
            z[m, n] = np.sum(w * p[m:m + r, n:n + c])
    return z


p = np.arange(20).reshape(4, 5)  # the primer's 4x5 input
w = np.array([[1, 2], [3, 4]])
z = correlate_by_hand(p, w)
assert z.shape == (3, 4)
assert np.array_equal(z, correlate2d(p, w, mode="valid"))  # the engine
assert np.array_equal(z, sps.correlate2d(p, w, mode="valid"))  # scipy
print(z)

# %% [markdown]
r"""
The engine's `correlate2d` gives exactly scipy's answer. (In the math, this sliding
product is a **cross-correlation**; most deep-learning code calls it "convolution". The
difference is next.)

## 2. Correlation vs convolution, valid vs full (the primer's Appendix A)

A true **convolution** rotates the kernel by 180 degrees before sliding it. In **valid**
mode the overlay stays inside the input; in **full** mode it starts with only its
bottom-right cell over the input's top-left cell, the missing cells reading as zeros; **same**
mode crops `full` to the input's size. Here are the primer's numbers, checked against both the
engine and `scipy.signal`:
"""

# %%
values = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
f = np.array([[10, 20], [30, 40]])
f_rot180 = np.rot90(np.rot90(f))
assert np.array_equal(f_rot180, [[40, 30], [20, 10]])

appendix_a = {  # (function, kernel, mode): the primer's printed result
    ("correlate2d", "f", "valid"): [[370, 470], [670, 770]],
    ("convolve2d", "f", "valid"): [[230, 330], [530, 630]],
    ("correlate2d", "f_rot180", "valid"): [[230, 330], [530, 630]],
    ("correlate2d", "f", "full"): [[40, 110, 180, 90], [180, 370, 470, 210],
                                   [360, 670, 770, 330], [140, 230, 260, 90]],
    ("convolve2d", "f", "full"): [[10, 40, 70, 60], [70, 230, 330, 240],
                                  [190, 530, 630, 420], [210, 520, 590, 360]],
    ("correlate2d", "f_rot180", "full"): [[10, 40, 70, 60], [70, 230, 330, 240],
                                          [190, 530, 630, 420], [210, 520, 590, 360]],
}
engine = {"correlate2d": correlate2d, "convolve2d": convolve2d}
kernels = {"f": f, "f_rot180": f_rot180}
for (name, kernel, mode), expected in appendix_a.items():
    ours = engine[name](values, kernels[kernel], mode=mode)
    theirs = getattr(sps, name)(values, kernels[kernel], mode=mode)
    assert np.array_equal(ours, expected) and np.array_equal(theirs, expected)
    print(f"{name}(values, {kernel}, mode={mode!r}) =\n{ours.astype(int)}\n")

# %% [markdown]
r"""
Convolution = correlation with the kernel rotated 180 degrees. Below, the three modes are
checked against scipy with random non-square inputs. One subtlety of `same`: it crops the
centre of `full`, and for an *even* kernel the centre is half a pixel off, so scipy crops
correlation and convolution on different sides. The rotation identity therefore holds in
`same` mode only for odd kernels (the engine copies scipy here too):
"""

# %%
rng = np.random.default_rng(0)
image = rng.standard_normal((6, 9))
for kernel in (rng.standard_normal((3, 4)), rng.standard_normal((3, 3))):
    for mode in ("valid", "full", "same"):
        assert np.allclose(correlate2d(image, kernel, mode), sps.correlate2d(image, kernel, mode))
        assert np.allclose(convolve2d(image, kernel, mode), sps.convolve2d(image, kernel, mode))
        rotation_identity = np.allclose(convolve2d(image, kernel, mode),
                                        correlate2d(image, np.rot90(kernel, 2), mode))
        assert rotation_identity == (mode != "same" or kernel.shape[1] % 2 == 1)
        print(f"{mode:>5}: input {image.shape}, kernel {kernel.shape} -> output "
              f"{correlate2d(image, kernel, mode).shape}; convolve == correlate(rot180): {rotation_identity}")

# %% [markdown]
r"""
## 3. Several input channels: stacking (the primer's Appendix B)

When the input has several feature maps (or colour planes), each output feature map has one
filter *per input map*. Correlating each pair separately and adding the results is the same as
stacking the maps into a 3-D block, stacking the filters into a 3-D block of the same depth,
and correlating the two blocks in `valid` mode: the depth collapses to 1.
"""

# %%
feature_map1 = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
feature_map2 = np.array([[9, 8, 7], [6, 5, 4], [3, 2, 1]])
filter1 = np.array([[1, 2], [3, 4]])
filter2 = np.array([[5, 6], [7, 8]])

result1 = correlate2d(feature_map1, filter1, mode="valid")
result2 = correlate2d(feature_map2, filter2, mode="valid")
assert np.array_equal(result1, [[37, 47], [67, 77]])
assert np.array_equal(result2, [[175, 149], [97, 71]])
sum_of_results = result1 + result2
assert np.array_equal(sum_of_results, [[212, 196], [164, 148]])

feature_maps_stacked = np.array([feature_map1, feature_map2])  # (2, 3, 3)
filters_stacked = np.array([filter1, filter2])  # (2, 2, 2)
stacked = sps.correlate(feature_maps_stacked, filters_stacked, mode="valid")  # scipy, 3-D
assert np.array_equal(stacked.reshape(2, 2), sum_of_results)

# the engine's convolution layer does the same in NCHW layout: x (N, C, H, W), weight (O, C, KH, KW)
out, _ = conv2d_forward(feature_maps_stacked[None].astype(float), filters_stacked[None].astype(float))
assert np.array_equal(out[0, 0], sum_of_results)
print(out[0, 0])

# %% [markdown]
r"""
## 4. Output size with padding and stride (Eq. 8.18)

**Padding** adds $P^d$ rings of zeros around the input; **stride** $S^t$ moves the overlay
$S^t$ pixels at a time. For an $R_r$-row input and an $r$-row kernel (Eq. 8.18; columns alike,
Eq. 8.19):

$$S_r = \frac{R_r + 2P^d - r}{S^t} + 1$$

When the division is not exact, the last positions that do not fit are dropped (integer
division). The table checks the formula against the shape that a `Conv2D` layer really
produces, on the cases of the two texts:
"""


# %%
def eq_8_18(R, r, P=0, S=1):
    return (R + 2 * P - r) // S + 1


cases = [  # (input rows, kernel, padding, stride, where it comes from)
    (3, 2, 0, 1, "Fig. 8.2: 3x3 input, 2x2 kernel"),
    (4, 2, 0, 2, "Fig. 8.3: stride 2"),
    (28, 4, 0, 1, "primer: 28x28 input, 4x4 overlay -> 25x25"),
    (15, 3, 1, 2, "E8.7 i: 15x15, 3x3, stride 2, padding 1"),
    (15, 3, 1, 1, "E8.7 ii: padding 1 keeps 15x15"),
    (28, 5, 2, 1, "'same' padding for a 5x5 kernel"),
    (8, 3, 0, 2, "(8 - 3) / 2 is not whole: floor"),
]
print(f"{'R':>3} {'r':>2} {'P':>2} {'S':>2} | Eq.8.18 | Conv2D output")
for R, r, P, S, note in cases:
    layer = Conv2D(1, 1, kernel_size=r, stride=S, padding=P)
    produced = layer.forward(np.zeros((1, 1, R, R), dtype=np.float32)).shape[2:]
    assert produced == (eq_8_18(R, r, P, S),) * 2 == layer.output_shape((1, R, R))[1:]
    print(f"{R:>3} {r:>2} {P:>2} {S:>2} | {eq_8_18(R, r, P, S):>7} | {produced!s:>13}   {note}")

# %% [markdown]
r"""
## 5. A convolution is a matrix multiplication (Eq. 8.12)

Stack the pixels of the 3x3 input `P` into a vector, column after column (the `vec` of
Eq. 8.26, NumPy's `order="F"`). Then the 2x2 feature map, stacked the same way, is a 4x9
matrix times that vector:

$$\begin{bmatrix} z_{1,1} \\ z_{2,1} \\ z_{1,2} \\ z_{2,2} \end{bmatrix} =
\begin{bmatrix}
w_{1,1} & w_{2,1} & 0 & w_{1,2} & w_{2,2} & 0 & 0 & 0 & 0 \\
0 & w_{1,1} & w_{2,1} & 0 & w_{1,2} & w_{2,2} & 0 & 0 & 0 \\
0 & 0 & 0 & w_{1,1} & w_{2,1} & 0 & w_{1,2} & w_{2,2} & 0 \\
0 & 0 & 0 & 0 & w_{1,1} & w_{2,1} & 0 & w_{1,2} & w_{2,2}
\end{bmatrix}
\begin{bmatrix} p_{1,1} \\ p_{2,1} \\ p_{3,1} \\ p_{1,2} \\ \vdots \\ p_{3,3} \end{bmatrix}$$

Let us build that matrix for any input size. Row `k` of the matrix is output neuron `k`; it
holds the kernel's weights in the columns of the pixels that neuron sees, and zeros elsewhere.
To read the result, give each weight its own index as its value: $w_{1,1} = 11$,
$w_{1,2} = 12$, $w_{2,1} = 21$, $w_{2,2} = 22$.
"""


# %%
def weight_sharing_matrix(w, input_shape, order="F"):
    """The matrix M of Eq. 8.12: vec(correlate(P, w, 'valid')) == M @ vec(P).

    order="F" stacks columns (Eq. 8.26, as in the book); order="C" stacks rows (NumPy's default,
    and the order of the rows of an im2col matrix).
    """
    (R_r, R_c), (r, c) = input_shape, w.shape
    S_r, S_c = R_r - r + 1, R_c - c + 1
    M = np.zeros((S_r * S_c, R_r * R_c), dtype=w.dtype)
    for m in range(S_r):
        for n in range(S_c):
            row = np.ravel_multi_index((m, n), (S_r, S_c), order=order)  # where z[m, n] sits in vec(Z)
            for i in range(r):
                for j in range(c):
                    col = np.ravel_multi_index((m + i, n + j), (R_r, R_c), order=order)  # p[m+i, n+j]
                    M[row, col] = w[i, j]
    return M


w_named = np.array([[11, 12], [21, 22]])  # w_ij has the value ij
M = weight_sharing_matrix(w_named, (3, 3))
eq_8_12 = np.array([
    [11, 21, 0, 12, 22, 0, 0, 0, 0],
    [0, 11, 21, 0, 12, 22, 0, 0, 0],
    [0, 0, 0, 11, 21, 0, 12, 22, 0],
    [0, 0, 0, 0, 11, 21, 0, 12, 22],
])  # Eq. 8.12, typed in from the book
assert np.array_equal(M, eq_8_12)

P = values  # the 3x3 input of Appendix A
z_vec = M @ P.ravel(order="F")
assert np.array_equal(z_vec.reshape(2, 2, order="F"), correlate2d(P, w_named, "valid"))
print(M)

# %% [markdown]
r"""
Every row holds the **same four weights**, shifted: that is *weight sharing*. The zeros say
each neuron only sees its own 2x2 patch: a *local receptive field*. Drawn for a slightly bigger
case, a 6x6 input and a 3x3 kernel with weights 1..9, the matrix is a sparse band:
"""

# %%
w9 = np.arange(1, 10).reshape(3, 3)
M_big = weight_sharing_matrix(w9, (6, 6))  # 16 neurons x 36 pixels
fig, ax = plt.subplots(figsize=(9, 4))
shown = ax.imshow(np.ma.masked_equal(M_big, 0), cmap="viridis")
ax.set(title="Eq. 8.12 for a 6x6 input and a 3x3 kernel (zeros left blank)",
       xlabel="pixel of vec(P)  (column stacking)", ylabel="output neuron of vec(Z)")
fig.colorbar(shown, ax=ax, label="kernel weight", shrink=0.8)
plt.show()
print(f"{M_big.size} entries, {np.count_nonzero(M_big)} non-zero ({np.count_nonzero(M_big) / M_big.size:.0%}), "
      f"but only {w9.size} distinct weights")

# %% [markdown]
r"""
### im2col: the same product, without the zeros

Multiplying by this matrix is wasteful: it is mostly zeros, and for real layers it is huge.
**im2col** flips the point of view. Instead of spreading the *weights* over a big sparse matrix,
it gathers the *pixels*: row `k` of `im2col(P)` is the patch that neuron `k` sees, flattened.
Then all neurons at once are one dense product with the flattened kernel:

    feature map = im2col(P) @ w.ravel()

Below, `im2col` is applied to an image whose pixels hold their own index, so each row shows
*which* pixels neuron `k` reads. Those are exactly the columns where row `k` of the
weight-sharing matrix is non-zero, and the weights there are `w` in order. (im2col lists the
output neurons row by row, so we compare with the `order="C"` version of the matrix.)
"""

# %%
H = W = 6
index_image = np.arange(H * W).reshape(1, 1, H, W)  # (N, C, H, W): pixel k holds the number k
cols_index = im2col(index_image, kernel_size=3).astype(int)  # (16 neurons, 9 = 3x3 patch)
M_rows = weight_sharing_matrix(w9, (H, W), order="C")
for k in range(M_rows.shape[0]):
    assert np.array_equal(np.flatnonzero(M_rows[k]), cols_index[k])  # the same pixels...
    assert np.array_equal(M_rows[k, cols_index[k]], w9.ravel())  # ...with the kernel's weights

image = rng.standard_normal((H, W))
cols = im2col(image[None, None], kernel_size=3)
assert np.allclose(cols @ w9.ravel(), M_rows @ image.ravel())  # im2col + product == Eq. 8.12
assert np.allclose((cols @ w9.ravel()).reshape(4, 4), correlate2d(image, w9, "valid"))

fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), gridspec_kw={"width_ratios": [1, 1.6]})
rows_cmap = {"cmap": "Pastel1", "vmin": 0, "vmax": 8}  # colour = the row of the input image
axes[0].imshow(index_image[0, 0] // W, **rows_cmap)
for (i, j), v in np.ndenumerate(index_image[0, 0]):
    axes[0].text(j, i, v, ha="center", va="center", fontsize=8)
axes[0].add_patch(Rectangle((0.5, 0.5), 3, 3, fill=False, lw=2.5, ec="tab:red"))
axes[0].set(title="6x6 input, pixel numbers\n(red: neuron 5's receptive field)", xticks=[], yticks=[])
axes[1].imshow(cols_index // W, aspect="auto", **rows_cmap)
for (i, j), v in np.ndenumerate(cols_index):
    axes[1].text(j, i, v, ha="center", va="center", fontsize=8)
axes[1].add_patch(Rectangle((-0.5, 4.5), 9, 1, fill=False, lw=2.5, ec="tab:red"))
axes[1].set(title="im2col(input): one row per output neuron\n(colour = row of the input)", xlabel="position in the 3x3 patch",
            ylabel="output neuron", yticks=range(16))
plt.tight_layout()
plt.show()

# %% [markdown]
r"""
### A whole layer is one GEMM

A real layer has a batch of N images, C input channels and O filters. im2col puts every
receptive field of every image in a row, `C*KH*KW` numbers long (Appendix B's stacking: all
channels of the patch side by side). The O filters, flattened, are the rows of an
`O x C*KH*KW` matrix. One matrix product computes **every neuron of every feature map of
every image**; a reshape puts them back in (N, O, OH, OW) order. That is what
`cnn_im2col.functional.conv2d_forward` does, and it agrees with the primer's way (one scipy
correlation per pair of maps, summed):
"""

# %%
N, C, O, K = 2, 3, 4, 3
x = rng.standard_normal((N, C, 8, 8))
weight = rng.standard_normal((O, C, K, K))

cols = im2col(x, kernel_size=K)  # (N*6*6, C*3*3) = (72, 27)
gemm = cols @ weight.reshape(O, -1).T  # (72, 4): one product for the whole layer
by_gemm = gemm.reshape(N, 6, 6, O).transpose(0, 3, 1, 2)  # -> (N, O, 6, 6)

engine_out, _ = conv2d_forward(x, weight)
primer = np.array([[sum(sps.correlate2d(x[n, c], weight[o, c], "valid") for c in range(C))
                    for o in range(O)] for n in range(N)])
assert np.allclose(by_gemm, engine_out) and np.allclose(engine_out, primer)
print("im2col matrix:", cols.shape, " weights:", weight.reshape(O, -1).shape, " output:", engine_out.shape)

# %% [markdown]
r"""
Why not just multiply by the weight-sharing matrix? Count, for one MNIST image (28x28)
and a first layer of 32 filters of 5x5:
"""

# %%
R, r, O = 28, 5, 32
S = R - r + 1
sharing = (O * S * S) * (R * R)  # one row per output neuron, one column per pixel
im2col_size = (S * S) * (r * r) + O * (r * r)  # the patches plus the flattened filters
print(f"weight-sharing matrix: {O * S * S} x {R * R} = {sharing:,} numbers, "
      f"{O * S * S * r * r / sharing:.1%} of them non-zero")
print(f"im2col matrix + filters: {S * S} x {r * r} + {O} x {r * r} = {im2col_size:,} numbers "
      f"({sharing / im2col_size:.0f} times fewer)")

# %% [markdown]
r"""
## 6. The im2col matrix of a real digit

`load_mnist()` returns the MNIST digits as (N, 1, 28, 28) float32 arrays in [0, 1] (the
first call downloads and caches them). The first training image is a 5. With a 5x5 kernel it
has 24 x 24 = 576 receptive fields, so its im2col matrix has 576 rows of 25 pixels. Drawn
transposed (one *column* per receptive field) it is a strip in which you can see the digit's
strokes pass by, row of the image after row:
"""

# %%
(x_train, y_train), _ = load_mnist()
digit = x_train[0, 0]
assert digit.shape == (28, 28) and y_train[0] == 5

cols = im2col(digit[None, None], kernel_size=5)  # (576, 25)
assert cols.shape == (576, 25)
k = 9 * 24 + 8  # the receptive field whose top-left pixel is (9, 8)
assert np.array_equal(cols[k].reshape(5, 5), digit[9:14, 8:13])

fig = plt.figure(figsize=(10, 4.2))
grid = fig.add_gridspec(2, 3, width_ratios=[1, 1, 4.5], height_ratios=[1, 0.55])
ax = fig.add_subplot(grid[0, 0])
ax.imshow(digit)
ax.add_patch(Rectangle((7.5, 8.5), 5, 5, fill=False, lw=2, ec="tab:red"))
ax.set(title=f"label {y_train[0]}", xticks=[], yticks=[])
ax = fig.add_subplot(grid[0, 1])
ax.imshow(cols[k].reshape(5, 5))
ax.set(title=f"row {k} of im2col,\nas a 5x5 patch", xticks=[], yticks=[])
ax = fig.add_subplot(grid[0, 2])
ax.imshow(cols[:288].T, aspect="auto", interpolation="nearest")
ax.axvline(k, color="tab:red", lw=1)
ax.set(title="im2col(digit).T, first 288 of 576 receptive fields", xlabel="receptive field (output neuron)",
       ylabel="pixel of the patch")
ax = fig.add_subplot(grid[1, :])
ax.imshow(cols.T, aspect="auto", interpolation="nearest")
ax.set(title="all 576 (24 rows of 24 positions)", xlabel="receptive field", yticks=[])
plt.tight_layout()
plt.show()

# %% [markdown]
r"""
Now one GEMM applies four 5x5 edge filters (horizontal, vertical and the two diagonals, each a
bright bar between dark sides) to all 576 patches at once, giving four 24x24 feature maps. Each
neuron responds where the stroke under its patch looks like its filter. This is what the first
layer of a trained network computes; in notebook 3 such filters are designed by hand, in
notebook 4 they are learned.
"""

# %%
horizontal = np.repeat(np.array([[-1], [1], [1], [1], [-1]]), 5, axis=1)  # a 3-pixel bar
diagonal = np.array([[1 if abs(i - j) <= 1 else -1 for j in range(5)] for i in range(5)])
filters = np.array([horizontal, horizontal.T, diagonal, np.fliplr(diagonal)], dtype=float)
filters -= filters.mean(axis=(1, 2), keepdims=True)  # no response to a flat patch
filters /= np.linalg.norm(filters, axis=(1, 2), keepdims=True)  # comparable responses

maps = (cols @ filters.reshape(4, -1).T).reshape(24, 24, 4).transpose(2, 0, 1)  # one GEMM
for f_, m in zip(filters, maps):
    assert np.allclose(m, sps.correlate2d(digit, f_, "valid"), atol=1e-5)

fig, axes = plt.subplots(2, 4, figsize=(9, 4.6), gridspec_kw={"height_ratios": [1, 2.5]})
names = ["horizontal", "vertical", "diagonal \\", "diagonal /"]
for ax_f, ax_m, f_, m, name in zip(axes[0], axes[1], filters, maps, names):
    ax_f.imshow(f_, cmap="RdBu_r", vmin=-0.3, vmax=0.3)
    ax_f.set(title=f"{name} filter", xticks=[], yticks=[])
    ax_m.imshow(m, cmap="RdBu_r", vmin=-abs(maps).max(), vmax=abs(maps).max())
    ax_m.set(title="feature map (red > 0)", xticks=[], yticks=[])
plt.tight_layout()
plt.show()

# %% [markdown]
r"""
**Summary.** A feature map is a cross-correlation of the input with a small kernel. Written as
a matrix product (Eq. 8.12) the matrix is huge, sparse and repetitive; im2col writes the same
product as a small dense matrix of patches times the flattened kernels, one GEMM for a whole
layer and batch. Next, [notebook 2](02_backpropagation_through_feature_maps.ipynb) runs this
backwards to get the gradients.
"""
