/* rstn explorers in the browser: the affine explorer and the attention explorer.
 *
 * The warp runs here, with exactly the convention of rstn.sampler (its docstring is the reference):
 *   - theta (2 x 3) maps OUTPUT grid points to INPUT sample points;
 *   - coordinates are normalised to [-1, 1] with the end points on the centres of the end pixels
 *     (PyTorch's align_corners=True);
 *   - points are (x, y); samples that fall outside the input read zero.
 * The sampler functions carry the names of rstn.sampler (outputSize, affineGrid, bilinearSample,
 * attentionTheta, transform) so the two can be read side by side; the browser test checks that they
 * agree to within one grey level. Canvas and CSS transforms map the other way (input -> output, in
 * pixels), which is why nothing here uses them for the warp.
 *
 * Python (rstn.explorers) writes each explorer as one self-contained HTML output: this file inlined, the
 * image data as base64 in a JSON script tag, and a call to mountAffine or mountAttention.
 */
(function () {
  'use strict';
  const VERSION = '3';
  // Every output inlines this file; the first copy defines the API and later copies reuse it.
  if (window.rstnExplorer && window.rstnExplorer.version === VERSION) return;

  // ---------------------------------------------------------------- the sampler (rstn.sampler) ----

  /** Glimpse size at down-sampling factor d: floor(H / d) x floor(W / d), as rstn.sampler.output_size. */
  function outputSize(height, width, d) {
    return [Math.floor(height / d), Math.floor(width / d)];
  }

  /** n points from -1 to 1 with both end points exact (symmetric, as torch.linspace computes them). */
  function linspace(n) {
    const out = new Float64Array(n);
    if (n === 1) { out[0] = 0; return out; }  // a single point sits at 0, as in F.affine_grid
    const step = 2 / (n - 1);
    for (let i = 0; i < n; i++) out[i] = i < n / 2 ? -1 + i * step : 1 - (n - 1 - i) * step;
    return out;
  }

  /**
   * The sampling grid of an output of height x width: (x_s, y_s) for every output point, row-major,
   * interleaved [x, y, x, y, ...] (Float64Array of length 2 * height * width).
   * theta: [t11, t12, t13, t21, t22, t23].
   */
  function affineGrid(theta, height, width) {
    const [t11, t12, t13, t21, t22, t23] = theta;
    const xs = linspace(width), ys = linspace(height);
    const grid = new Float64Array(2 * height * width);
    for (let i = 0; i < height; i++) {
      for (let j = 0; j < width; j++) {
        const p = 2 * (i * width + j);
        // STN eq. (1): (x_s, y_s) = A_theta (x_t, y_t, 1)
        grid[p] = t11 * xs[j] + t12 * ys[i] + t13;
        grid[p + 1] = t21 * xs[j] + t22 * ys[i] + t23;
      }
    }
    return grid;
  }

  /**
   * Bilinear sampling of a one-channel image at the grid's points.
   * image: {data: Float32Array|Float64Array (H * W, row-major, values in [0, 1]), height: H, width: W}.
   * Returns a Float64Array of length height * width (the output, row-major).
   */
  function bilinearSample(image, grid, height, width) {
    const H = image.height, W = image.width, U = image.data;
    // zeros outside: a neighbour off the image contributes nothing (PyTorch's padding_mode="zeros")
    const at = (m, n) => (m >= 0 && m < W && n >= 0 && n < H ? U[n * W + m] : 0);
    const out = new Float64Array(height * width);
    for (let p = 0; p < height * width; p++) {
      // align_corners=True: -1 and 1 land on the centres of the first and last pixels
      const x = (grid[2 * p] + 1) / 2 * (W - 1);
      const y = (grid[2 * p + 1] + 1) / 2 * (H - 1);
      const m = Math.floor(x), n = Math.floor(y);
      const fx = x - m, fy = y - n;
      // STN eq. (5): V = sum_nm U_nm max(0, 1 - |x - m|) max(0, 1 - |y - n|); only the four
      // neighbours (m..m+1, n..n+1) of the sample point have a non-zero kernel weight
      out[p] = (1 - fx) * (1 - fy) * at(m, n) + fx * (1 - fy) * at(m + 1, n)
             + (1 - fx) * fy * at(m, n + 1) + fx * fy * at(m + 1, n + 1);
    }
    return out;
  }

  /** STN eq. (2): the attention form, A_theta = [[s, 0, tx], [0, s, ty]]. */
  function attentionTheta(s, tx, ty) {
    return [s, 0, tx, 0, s, ty];
  }

  /** The inverse of attentionTheta: {s, tx, ty} when theta has the attention form, else null. */
  function attentionForm(theta, tol = 1e-9) {
    const [t11, t12, t13, t21, t22, t23] = theta;
    const ok = Math.abs(t12) < tol && Math.abs(t21) < tol && Math.abs(t11 - t22) < tol;
    return ok ? { s: t11, tx: t13, ty: t23 } : null;
  }

  /** The glimpse of `image` through theta at down-sampling factor d: {height, width, data}. */
  function transform(image, theta, d) {
    const [h, w] = outputSize(image.height, image.width, d);
    return { height: h, width: w, data: bilinearSample(image, affineGrid(theta, h, w), h, w) };
  }

  /**
   * Normalised (x, y) in [-1, 1] (align_corners=True) -> pixel coordinates of an H x W image, where pixel i
   * covers [i, i + 1): -1 is 0.5, the centre of pixel 0, and +1 is W - 0.5. The one conversion of the
   * package, mirrored from rstn.attention.normalised_to_pixels (keep the two the same).
   */
  function normalisedToPixels(x, y, height, width) {
    return [(x + 1) / 2 * (width - 1) + 0.5, (y + 1) / 2 * (height - 1) + 0.5];
  }

  /** Apply theta to one normalised output point (x_t, y_t). */
  function applyTheta(theta, x, y) {
    return [theta[0] * x + theta[1] * y + theta[2], theta[3] * x + theta[4] * y + theta[5]];
  }

  // ------------------------------------------------------------------------- data and drawing ----

  /** Decode {dtype, shape, data (base64, little-endian)} written by rstn.explorers.encode_array. */
  function decodeArray(spec) {
    const bytes = Uint8Array.from(atob(spec.data), (c) => c.charCodeAt(0));
    const types = { uint8: Uint8Array, int8: Int8Array, int32: Int32Array, float32: Float32Array };
    const Type = types[spec.dtype];
    if (!Type) throw new Error('rstn explorer: unsupported dtype ' + spec.dtype);
    return new Type(bytes.buffer, 0, bytes.length / Type.BYTES_PER_ELEMENT);
  }

  /** The k-th (H, W) image of a decoded (N, H, W) uint8 stack, as floats in [0, 1]. */
  function imageAt(stack, shape, k) {
    const [, H, W] = shape;
    const data = new Float64Array(H * W);
    for (let i = 0; i < H * W; i++) data[i] = stack[k * H * W + i] / 255;
    return { height: H, width: W, data: data };
  }

  /** Draw a grey image (values in [0, 1]) on a canvas of exactly its size; CSS scales it up, pixelated. */
  function drawGray(canvas, image) {
    canvas.width = image.width;
    canvas.height = image.height;
    const ctx = canvas.getContext('2d');
    const pixels = ctx.createImageData(image.width, image.height);
    for (let i = 0; i < image.width * image.height; i++) {
      const v = Math.round(Math.min(1, Math.max(0, image.data[i])) * 255);
      pixels.data[4 * i] = pixels.data[4 * i + 1] = pixels.data[4 * i + 2] = v;
      pixels.data[4 * i + 3] = 255;
    }
    ctx.putImageData(pixels, 0, 0);
  }

  /** The grey levels (0..255) shown on a canvas drawn by drawGray: what the browser test compares. */
  function canvasGray(canvas) {
    const rgba = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    return Array.from({ length: canvas.width * canvas.height }, (_, i) => rgba[4 * i]);
  }

  /**
   * The input drawn SCALE times larger inside a margin, so that sample points and boxes that fall outside
   * the image (where the sampler reads zero) stay visible. Returns {canvas, ctx, pad, scale, draw(image),
   * point(x, y)}: pad is the margin in image pixels, scale the canvas pixels per image pixel.
   */
  function inputView(height, width) {
    const pad = Math.round(MARGIN * Math.max(height, width));
    const canvas = el('canvas', { class: 'rstn-input' });
    canvas.width = (width + 2 * pad) * SCALE;
    canvas.height = (height + 2 * pad) * SCALE;
    const ctx = canvas.getContext('2d');
    const pixels = document.createElement('canvas');  // the image at its own size, scaled up when drawn
    return {
      canvas: canvas, ctx: ctx, pad: pad, scale: SCALE,
      /** Normalised (x, y) -> canvas pixels: image pixels (normalisedToPixels), shifted by the margin, scaled. */
      point: (x, y) => normalisedToPixels(x, y, height, width).map((p) => (p + pad) * SCALE),
      /** Clear the view and draw `image` with the margin around it hatched (outside: reads 0). */
      draw: (image) => {
        ctx.fillStyle = '#3a3f47';
        ctx.fillRect(0, 0, canvas.width, canvas.height);
        ctx.strokeStyle = '#4b515a';
        ctx.lineWidth = 2;
        for (let k = -canvas.height; k < canvas.width; k += 16) {
          ctx.beginPath(); ctx.moveTo(k, canvas.height); ctx.lineTo(k + canvas.height, 0); ctx.stroke();
        }
        drawGray(pixels, image);
        ctx.imageSmoothingEnabled = false;
        ctx.drawImage(pixels, pad * SCALE, pad * SCALE, width * SCALE, height * SCALE);
      },
    };
  }

  /** The quadrilateral of input points that the output's corner pixels sample, in the view's pixels. */
  function thetaQuad(theta, view) {
    return [[-1, -1], [1, -1], [1, 1], [-1, 1]].map(([x, y]) => view.point(...applyTheta(theta, x, y)));
  }

  function strokePolygon(ctx, points, color, width) {
    ctx.beginPath();
    points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    ctx.closePath();
    ctx.strokeStyle = color;
    ctx.lineWidth = width;
    ctx.stroke();
  }

  /** Step t's number inside corner t (of 4) of its glimpse `quad`, so that coinciding glimpses (every step
   * at the identity early in training) keep their numbers apart (as rstn.viz.plot_attention); returns where. */
  function labelStep(ctx, quad, t, color) {
    const [cx, cy] = quad[t % 4];
    const mx = (quad[0][0] + quad[2][0]) / 2 - cx, my = (quad[0][1] + quad[2][1]) / 2 - cy;
    const inward = Math.min(1, 24 / Math.max(Math.hypot(mx, my), 1e-6));
    const x = cx + mx * inward, y = cy + my * inward;
    ctx.fillStyle = color;
    ctx.font = 'bold 28px sans-serif';
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    ctx.fillText(String(t + 1), x, y);
    return { x, y };
  }

  /** Small DOM helper: el('div', {class: 'x'}, child, 'text', ...). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') node.className = v; else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c);
    return node;
  }

  /** A labelled range input; onInput(value) runs as it moves; format(value) is the text shown beside it. */
  function slider(label, min, max, step, value, onInput, format = (v) => v.toFixed(2)) {
    const input = el('input', { type: 'range', min: min, max: max, step: step, 'aria-label': label });
    const out = el('output', {});
    const set = (v) => { input.value = v; out.textContent = format(Number(input.value)); };
    input.addEventListener('input', () => { set(input.value); onInput(Number(input.value)); });
    set(value);
    const node = el('label', { class: 'rstn-slider' }, el('span', { class: 'rstn-name' }, label), input, out);
    return { node: node, input: input, set: set };
  }

  const SCALE = 4;  // input view resolution: canvas pixels per image pixel
  const MARGIN = 0.2;  // the input view's margin around the image, as a fraction of its size

  // ------------------------------------------------------------------------- affine explorer ----

  const PRESETS = {
    identity: [1, 0, 0, 0, 1, 0],
    zoom: [0.5, 0, 0, 0, 0.5, 0],
    rotate: [Math.cos(Math.PI / 6), -Math.sin(Math.PI / 6), 0, Math.sin(Math.PI / 6), Math.cos(Math.PI / 6), 0],
    shear: [1, 0.5, 0, 0, 1, 0],
    translate: [1, 0, 0.4, 0, 1, -0.3],
  };
  const THETA_NAMES = ['θ11', 'θ12', 'θ13', 'θ21', 'θ22', 'θ23'];

  /** Mount the affine explorer in `root` with data {image: encoded (1, H, W) uint8, theta, d, caption}. */
  function mountAffine(root, spec) {
    const image = imageAt(decodeArray(spec.image), spec.image.shape, 0);
    let theta = spec.theta.slice(), d = spec.d;

    const view = inputView(image.height, image.width);
    const outputCanvas = el('canvas', { class: 'rstn-image', 'data-role': 'output' });
    const outputCaption = el('figcaption', {});

    const thetaSliders = THETA_NAMES.map((name, k) =>
      slider(name, -2, 2, 0.01, theta[k], (v) => { theta[k] = v; render(); }));
    // the attention form's sliders show theta whenever theta has that form (the identity at load: s = 1)
    const attention = attentionForm(theta) || { s: 1, tx: 0, ty: 0 };
    const fromAttention = () => {
      theta = attentionTheta(attention.s, attention.tx, attention.ty);
      syncSliders();
      render();
    };
    const attentionSliders = [
      slider('s', 0.05, 1.5, 0.01, attention.s, (v) => { attention.s = v; fromAttention(); }),
      slider('tx', -1, 1, 0.01, attention.tx, (v) => { attention.tx = v; fromAttention(); }),
      slider('ty', -1, 1, 0.01, attention.ty, (v) => { attention.ty = v; fromAttention(); }),
    ];
    const attentionNote = el('div', { class: 'rstn-note', 'data-role': 'attention-note' });
    /** Theta's sliders follow theta; the attention form's follow it too when theta has that form. */
    const syncSliders = () => {
      thetaSliders.forEach((s, k) => s.set(theta[k]));
      const form = attentionForm(theta);
      if (form) {
        Object.assign(attention, form);
        attentionSliders.forEach((s, k) => s.set([form.s, form.tx, form.ty][k]));
      }
      attentionNote.textContent = form ? '' : 'θ is not of this form (θ12, θ21 ≠ 0 or θ11 ≠ θ22): ' +
        'moving s, tx or ty replaces it.';
      attentionSliders.forEach((s) => s.node.classList.toggle('rstn-inactive', !form));
    };
    thetaSliders.forEach((s) => s.input.addEventListener('input', syncSliders));

    const presetButtons = Object.keys(PRESETS).map((name) => {
      const b = el('button', { type: 'button', 'data-preset': name }, name);
      b.addEventListener('click', () => { theta = PRESETS[name].slice(); syncSliders(); render(); });
      return b;
    });
    const dButtons = [1, 2, 3, 4].map((k) => {
      const b = el('button', { type: 'button', 'data-d': k }, 'd = ' + k);
      b.addEventListener('click', () => { d = k; render(); });
      return b;
    });

    /** The input with the sampling grid: the output's grid points mapped through theta. */
    function drawInput() {
      const ctx = view.ctx;
      view.draw(image);
      const [h, w] = outputSize(image.height, image.width, d);
      // an 11 x 11 lattice of the output's h x w grid points (normalised coordinates of point k of 0..10)
      const lattice = (n, k) => (n === 1 ? 0 : -1 + 2 * Math.round(k * (n - 1) / 10) / (n - 1));
      const line = (a, b) => { ctx.beginPath(); ctx.moveTo(...a); ctx.lineTo(...b); ctx.stroke(); };
      ctx.lineWidth = 1;
      ctx.strokeStyle = 'rgba(86, 180, 233, 0.55)';
      for (let k = 0; k <= 10; k++) {
        // theta is affine, so grid lines stay straight: map their two end points
        line(view.point(...applyTheta(theta, lattice(w, k), -1)), view.point(...applyTheta(theta, lattice(w, k), 1)));
        line(view.point(...applyTheta(theta, -1, lattice(h, k))), view.point(...applyTheta(theta, 1, lattice(h, k))));
      }
      ctx.fillStyle = '#56B4E9';
      for (let a = 0; a <= 10; a++) {
        for (let b = 0; b <= 10; b++) {
          const [x, y] = view.point(...applyTheta(theta, lattice(w, a), lattice(h, b)));
          ctx.fillRect(x - 2, y - 2, 4, 4);
        }
      }
      strokePolygon(ctx, thetaQuad(theta, view), spec.stepColors[0], 3);
      // the output's first pixel (top left): shows flips and rotations at a glance
      const [x0, y0] = view.point(...applyTheta(theta, -1, -1));
      ctx.fillStyle = spec.stepColors[0];
      ctx.beginPath(); ctx.arc(x0, y0, 7, 0, 2 * Math.PI); ctx.fill();
    }

    function render() {
      const out = transform(image, theta, d);
      drawGray(outputCanvas, out);
      outputCaption.textContent = 'output ' + out.height + ' × ' + out.width + ' (d = ' + d + ')';
      dButtons.forEach((b) => b.classList.toggle('rstn-active', Number(b.dataset.d) === d));
      drawInput();
    }

    root.append(
      el('div', { class: 'rstn-title' }, spec.title || 'Affine explorer'),
      el('div', { class: 'rstn-panels' },
        el('figure', {}, view.canvas,
          el('figcaption', {},
            (spec.caption || 'input ' + image.height + ' × ' + image.width) + ' (hatched: outside, reads 0)')),
        el('figure', {}, outputCanvas, outputCaption)),
      el('div', { class: 'rstn-note' }, 'On the input: the output\'s border mapped through θ (orange; the dot is its ' +
        'first, top-left pixel) and 11 × 11 of its grid points (blue): where each output pixel is sampled.'),
      el('div', { class: 'rstn-controls' },
        el('div', { class: 'rstn-row' }, el('span', { class: 'rstn-label' }, 'preset'), ...presetButtons),
        el('div', { class: 'rstn-row' }, el('span', { class: 'rstn-label' }, 'output'), ...dButtons),
        el('fieldset', {}, el('legend', {}, 'A_θ (STN eq. 1): output (x_t, y_t, 1) → input (x_s, y_s)'),
          el('div', { class: 'rstn-grid' }, ...thetaSliders.map((s) => s.node))),
        el('fieldset', {}, el('legend', {}, 'attention form (STN eq. 2): [[s, 0, tx], [0, s, ty]]'),
          el('div', { class: 'rstn-grid' }, ...attentionSliders.map((s) => s.node)), attentionNote)));
    syncSliders();
    render();

    const instance = {
      kind: 'affine', root: root, image: image,
      /** The explorer's own warp of its image: what the browser test compares with rstn.sampler.transform. */
      sample: (th, dd) => {
        const o = transform(image, th, dd);
        return { height: o.height, width: o.width, data: Array.from(o.data) };
      },
      theta: () => theta.slice(), d: () => d,
      /** The attention form's (s, tx, ty) as its sliders show them. */
      attentionShown: () => attentionSliders.map((s) => Number(s.input.value)),
    };
    api.instances.push(instance);
    return instance;
  }

  // ---------------------------------------------------------------------- attention explorer ----

  /**
   * Mount the attention explorer in `root` with data {images: encoded (N, H, W) uint8, labels: (N, 3),
   * rows: [{row, label, d, theta: encoded (N, T, 2, 3) float32, predictions: encoded (N, 3)}], initial: the
   * index of the row shown first, indices (N,) in the test split, title, note}.
   */
  function mountAttention(root, spec) {
    const stack = decodeArray(spec.images), shape = spec.images.shape, n = shape[0];
    const labels = decodeArray(spec.labels);
    const rows = spec.rows.map((r) => ({ ...r, thetas: decodeArray(r.theta), preds: decodeArray(r.predictions) }));
    const initial = Math.min(Math.max(spec.initial || 0, 0), rows.length - 1);
    let row = rows[initial], k = 0;

    const view = inputView(shape[1], shape[2]);
    const crops = el('div', { class: 'rstn-crops' });
    const summary = el('div', { class: 'rstn-summary' });
    const labelled = [];  // where the step numbers were drawn last: {step, x, y} in canvas pixels

    const rowSelect = el('select', { 'aria-label': 'Table 1 row' },
      ...rows.map((r, i) => el('option', { value: i }, r.label)));
    rowSelect.value = String(initial);
    rowSelect.addEventListener('change', () => { row = rows[Number(rowSelect.value)]; render(); });
    // the slider runs over the embedded images; its label shows each one's index in the test split
    const imageSlider = slider('test image', 0, n - 1, 1, 0, (v) => { k = v; render(); },
      (v) => '#' + (spec.indices ? spec.indices[v] : v));
    const step = (delta) => { k = (k + delta + n) % n; imageSlider.set(k); render(); };
    const prev = el('button', { type: 'button' }, '◀'), next = el('button', { type: 'button' }, '▶');
    prev.addEventListener('click', () => step(-1));
    next.addEventListener('click', () => step(1));

    /** T, the number of glimpses a row's model takes (3 for RNN-SPN, 1 for FFN-SPN). */
    const stepsOf = (r) => r.thetas.length / (6 * n);
    /** theta of step t for image kk in row r, as [t11, t12, t13, t21, t22, t23]. */
    const thetaOf = (r, kk, t) => {
      const o = (kk * stepsOf(r) + t) * 6;
      return Array.from(r.thetas.subarray(o, o + 6));
    };

    function render() {
      const image = imageAt(stack, shape, k);
      view.draw(image);
      const T = stepsOf(row);
      const truth = Array.from(labels.subarray(3 * k, 3 * k + 3));
      const pred = Array.from(row.preds.subarray(3 * k, 3 * k + 3));
      const ctx = view.ctx;
      crops.replaceChildren();
      labelled.length = 0;
      for (let t = 0; t < T; t++) {
        const theta = thetaOf(row, k, t), color = spec.stepColors[t % spec.stepColors.length];
        const quad = thetaQuad(theta, view);
        strokePolygon(ctx, quad, color, 3);
        labelled.push({ step: t + 1, ...labelStep(ctx, quad, t, color) });
        const canvas = el('canvas', { class: 'rstn-image rstn-crop', 'data-step': t });
        drawGray(canvas, transform(image, theta, row.d));
        canvas.style.borderColor = color;
        // RNN-SPN reads digit t from glimpse t; FFN-SPN reads all three from its one glimpse
        const digits = T === 3 ? [t] : [0, 1, 2];
        const verdict = digits.map((i) =>
          el('span', { class: pred[i] === truth[i] ? 'rstn-ok' : 'rstn-bad' }, String(pred[i])));
        crops.append(el('figure', {}, canvas, el('figcaption', {}, 'step ' + (t + 1), el('br'),
          'predicted ', ...verdict.flatMap((v, i) => (i ? [' ', v] : [v])), el('br'),
          'true ' + digits.map((i) => truth[i]).join(' '))));
      }
      const wrong = pred.filter((p, i) => p !== truth[i]).length;
      summary.textContent = row.label + ': predicted ' + pred.join(' ') + ', true ' + truth.join(' ') +
        (wrong ? ' (' + wrong + ' wrong)' : ' (all correct)');
    }

    root.append(
      el('div', { class: 'rstn-title' }, spec.title || 'Attention explorer'),
      el('div', { class: 'rstn-note' }, spec.note || ''),
      el('div', { class: 'rstn-controls' },
        el('div', { class: 'rstn-row' }, el('span', { class: 'rstn-label' }, 'Table 1 row'), rowSelect),
        el('div', { class: 'rstn-row' }, prev, imageSlider.node, next)),
      el('div', { class: 'rstn-panels' },
        el('figure', {}, view.canvas, el('figcaption', {}, 'test image: the region each step samples')),
        crops),
      summary);
    render();

    const instance = {
      kind: 'attention', root: root, rows: rows.map((r) => r.row), count: n,
      /** The row on show (the select's choice). */
      shownRow: () => row.row,
      /** Where the shown image's step numbers are drawn, [{step, x, y}] in canvas pixels. */
      stepLabels: () => labelled.map((p) => ({ ...p })),
      steps: (rowName) => stepsOf(rows.find((x) => x.row === rowName)),
      /** The embedded grey levels (0..255) of image kk, row-major. */
      imageLevels: (kk) => Array.from(stack.subarray(kk * shape[1] * shape[2], (kk + 1) * shape[1] * shape[2])),
      /** JS crop of image kk at step t of a row, from the saved theta: compared with Python in the test. */
      crop: (rowName, kk, t) => {
        const r = rows.find((x) => x.row === rowName), theta = thetaOf(r, kk, t);
        const o = transform(imageAt(stack, shape, kk), theta, r.d);
        return { theta: theta, d: r.d, height: o.height, width: o.width, data: Array.from(o.data) };
      },
    };
    api.instances.push(instance);
    return instance;
  }

  const api = {
    version: VERSION,
    outputSize, affineGrid, bilinearSample, attentionTheta, attentionForm, normalisedToPixels, transform,
    decodeArray, canvasGray,
    mountAffine, mountAttention,
    // the drawing helpers, for the live explorer (rstn/assets/live.js), which inlines this file before its own
    ui: { el, drawGray, inputView, thetaQuad, strokePolygon, labelStep },
    instances: [],
    /** The first affine explorer's warp of its image by theta at d: {height, width, data (floats in [0, 1])}. */
    sample: (theta, d) => {
      const first = api.instances.find((i) => i.kind === 'affine');
      if (!first) throw new Error('rstn explorer: no affine explorer on this page');
      return first.sample(theta, d);
    },
  };
  window.rstnExplorer = api;
})();
