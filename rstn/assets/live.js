/* rstn live explorer: a trained RNN-SPN run in the browser on an input the reader builds.
 *
 * The forward pass is rstn.models.RNNSPN's in eval mode (dropout off), for one image (B = 1):
 *   c = localisation(x)                 the payload's op list: max-pool 2x2, conv 3x3 valid, ReLU; (1620,)
 *   h_t = GRU(c, h_{t-1}), t = 1..T     rstn.models.GRU: one bias per gate, h0 learned (or zero)
 *   theta_t = W h_t + b                 (2 x 3): output -> input, normalised, align_corners=True
 *   glimpse_t = transform(x, theta_t)   explorer.js's port of rstn.sampler, floor(100 / d) a side
 *   logits_t = head(classifier(glimpse_t)), probabilities = softmax(logits_t)
 * Activations are Float64Array in (C, H, W) row-major order, as PyTorch lays them out; weights are decoded
 * once from the payload (int8 x per-channel scale, or float16) into Float32Array, the float32 values that
 * rstn.live.page_model holds. tests/browser/test_live_page.py compares theta and the logits with PyTorch.
 *
 * The input is composed as rstn.live.compose (and rstn.data.render) does it: the digits' grey levels k / 256
 * (where dragged digits overlap, the brighter pixel), plus the clutter canvas, clipped to 1.
 * This file needs explorer.js (window.rstnExplorer) inlined before it.
 */
(function () {
  'use strict';
  const VERSION = '1';
  if (window.rstnLive && window.rstnLive.version === VERSION) return;
  const X = window.rstnExplorer;
  const { el, drawGray, inputView, thetaQuad, strokePolygon, labelStep } = X.ui;

  // ------------------------------------------------------------------------------- weights ----

  /** base64 -> bytes, in a plain loop (Uint8Array.from with a callback is ~10x slower on MB of weights). */
  function base64Bytes(text) {
    const s = atob(text), out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }

  /** A payload array {dtype: int8 | float32 | uint8, shape, data} as its typed array (little-endian). */
  function decodeTyped(spec) {
    const types = { uint8: Uint8Array, int8: Int8Array, float32: Float32Array, int32: Int32Array };
    return new types[spec.dtype](base64Bytes(spec.data).buffer);
  }

  /** IEEE half -> number. */
  function halfToFloat(h) {
    const sign = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
    if (e === 0) return sign * f * 2 ** -24;  // subnormal
    if (e === 31) return f ? NaN : sign * Infinity;
    return sign * (1 + f / 1024) * 2 ** (e - 15);
  }

  /** A payload tensor -> {shape, data: Float32Array}: float32 as is, float16 widened, int8 times its scale. */
  function decodeWeight(spec) {
    const n = spec.shape.reduce((a, b) => a * b, 1);
    const out = new Float32Array(n);
    if (spec.dtype === 'float16') {
      const bits = new Uint16Array(base64Bytes(spec.data).buffer);
      for (let i = 0; i < n; i++) out[i] = halfToFloat(bits[i]);
    } else if (spec.dtype === 'int8') {
      const q = decodeTyped(spec), scale = decodeTyped(spec.scale);
      // one scale per channel along `axis`: index i lies in channel floor(i / inner) mod shape[axis]
      const inner = spec.shape.slice(spec.axis + 1).reduce((a, b) => a * b, 1), channels = spec.shape[spec.axis];
      for (let i = 0; i < n; i++) out[i] = q[i] * scale[Math.floor(i / inner) % channels];
    } else {
      out.set(decodeTyped(spec));
    }
    return { shape: spec.shape, data: out };
  }

  function decodeOps(ops) {
    return ops.map((op) => (op.weight ? { ...op, weight: decodeWeight(op.weight), bias: decodeWeight(op.bias) } : op));
  }

  /** The model spec of rstn.live.model_payload, decoded. */
  function decodeModel(spec) {
    const g = spec.gru;
    return {
      ...spec, localisation: decodeOps(spec.localisation), classifier: decodeOps(spec.classifier),
      gru: { hidden: g.hidden, inputWeight: decodeWeight(g.inputWeight), hiddenWeight: decodeWeight(g.hiddenWeight),
        bias: decodeWeight(g.bias), h0: g.h0 ? decodeWeight(g.h0).data : new Float32Array(g.hidden) },
      theta: { weight: decodeWeight(spec.theta.weight), bias: decodeWeight(spec.theta.bias) },
      head: { weight: decodeWeight(spec.head.weight), bias: decodeWeight(spec.head.bias) },
    };
  }

  // -------------------------------------------------------------------------------- layers ----

  /** 2x2 max-pool, stride 2, a ragged border dropped (floor), as nn.MaxPool2d(2). x: {c, h, w, data}. */
  function maxPool(x) {
    const oh = Math.floor(x.h / 2), ow = Math.floor(x.w / 2), out = new Float64Array(x.c * oh * ow), d = x.data;
    for (let c = 0; c < x.c; c++) {
      for (let i = 0; i < oh; i++) {
        for (let j = 0; j < ow; j++) {
          const p = (c * x.h + 2 * i) * x.w + 2 * j;
          out[(c * oh + i) * ow + j] = Math.max(d[p], d[p + 1], d[p + x.w], d[p + x.w + 1]);
        }
      }
    }
    return { c: x.c, h: oh, w: ow, data: out };
  }

  /** 3x3 valid convolution (cross-correlation, as nn.Conv2d): weight (C_out, C_in, 3, 3), bias (C_out,). */
  function conv3x3(x, weight, bias) {
    const [co, ci] = weight.shape, H = x.h, Wd = x.w, oh = H - 2, ow = Wd - 2, W = weight.data, d = x.data;
    const plane = oh * ow, out = new Float64Array(co * plane);
    for (let o = 0; o < co; o++) {
      const base = o * plane;
      out.fill(bias.data[o], base, base + plane);
      for (let c = 0; c < ci; c++) {
        // the 3 x 3 kernel in locals, and nine multiply-adds per output pixel: ~4x fewer loads and stores
        // than a loop per kernel tap (this is most of the forward pass's time)
        const k = (o * ci + c) * 9, w0 = W[k], w1 = W[k + 1], w2 = W[k + 2], w3 = W[k + 3], w4 = W[k + 4],
          w5 = W[k + 5], w6 = W[k + 6], w7 = W[k + 7], w8 = W[k + 8], plane0 = c * H * Wd;
        for (let i = 0; i < oh; i++) {
          const r0 = plane0 + i * Wd, r1 = r0 + Wd, r2 = r1 + Wd, a = base + i * ow;
          for (let j = 0; j < ow; j++) {
            out[a + j] += w0 * d[r0 + j] + w1 * d[r0 + j + 1] + w2 * d[r0 + j + 2]
              + w3 * d[r1 + j] + w4 * d[r1 + j + 1] + w5 * d[r1 + j + 2]
              + w6 * d[r2 + j] + w7 * d[r2 + j + 1] + w8 * d[r2 + j + 2];
          }
        }
      }
    }
    return { c: co, h: oh, w: ow, data: out };
  }

  /** y = W x + b for W (out, in) row-major, as nn.Linear; x flat (a (C, H, W) map flattens row-major). */
  function dense(x, weight, bias) {
    const [no, ni] = weight.shape, W = weight.data, out = new Float64Array(no);
    for (let o = 0; o < no; o++) {
      let s = bias.data[o];
      for (let k = 0, r = o * ni; k < ni; k++) s += W[r + k] * x[k];
      out[o] = s;
    }
    return out;
  }

  /** A trunk (rstn.live._trunk_ops) on a map {c, h, w, data}; returns the last map's data, flat. */
  function runTrunk(ops, x) {
    for (const op of ops) {
      if (op.op === 'maxpool') x = maxPool(x);
      else if (op.op === 'conv') x = conv3x3(x, op.weight, op.bias);
      else if (op.op === 'dense') x = { c: op.weight.shape[0], h: 1, w: 1, data: dense(x.data, op.weight, op.bias) };
      else if (op.op === 'relu') { const d = x.data; for (let i = 0; i < d.length; i++) if (d[i] < 0) d[i] = 0; }
      else throw new Error('rstn live: unknown op ' + op.op);
    }
    return x.data;
  }

  /** v (n,) times M (n, m) row-major, plus b (m,): x @ W as torch.addmm(b, x, W). */
  function vecMat(v, M, b) {
    const [n, m] = M.shape, W = M.data, out = Float64Array.from(b);
    for (let k = 0; k < n; k++) {
      const vk = v[k];
      if (vk === 0) continue;  // ReLU features are mostly zero
      for (let c = 0, r = k * m; c < m; c++) out[c] += vk * W[r + c];
    }
    return out;
  }

  const sigmoid = (z) => 1 / (1 + Math.exp(-z));

  /** rstn.models.GRU: the hidden states h_1..h_T for the same input features at every step. */
  function gruStates(g, features, steps) {
    const H = g.hidden, projected = vecMat(features, g.inputWeight, g.bias.data);  // b + x W_x, (3H,)
    let h = Float64Array.from(g.h0);
    const states = [];
    for (let t = 0; t < steps; t++) {
      const hw = vecMat(h, g.hiddenWeight, new Float64Array(3 * H)), next = new Float64Array(H);
      for (let j = 0; j < H; j++) {
        const r = sigmoid(projected[j] + hw[j]), u = sigmoid(projected[H + j] + hw[H + j]);
        const candidate = Math.tanh(projected[2 * H + j] + r * hw[2 * H + j]);
        next[j] = (1 - u) * h[j] + u * candidate;
      }
      states.push(next);
      h = next;
    }
    return states;
  }

  function softmax(z) {
    const m = Math.max(...z), e = z.map((v) => Math.exp(v - m)), s = e.reduce((a, b) => a + b, 0);
    return e.map((v) => v / s);
  }

  /**
   * The RNN-SPN on one image: values (S * S, row-major, in [0, 1]).
   * Returns {theta: T x [6], logits: T x [10], probabilities, predictions, glimpses: T x {height, width, data}, ms}.
   */
  function forward(model, values) {
    const t0 = performance.now(), S = model.inputSize, g = model.glimpse;
    const x = { c: 1, h: S, w: S, data: Float64Array.from(values) };
    const features = runTrunk(model.localisation, x);  // RNN-SPN eq. (5): c = f_conv(I)
    const out = { theta: [], logits: [], glimpses: [] };
    for (const h of gruStates(model.gru, features, model.steps)) {  // eq. (6): h_t = f_rnn(c, h_{t-1})
      const theta = Array.from(dense(h, model.theta.weight, model.theta.bias));  // eq. (7): A_theta = g(h_t)
      const glimpse = { height: g, width: g, data: X.bilinearSample({ height: S, width: S, data: x.data },
        X.affineGrid(theta, g, g), g, g) };
      const hidden = runTrunk(model.classifier, { c: 1, h: g, w: g, data: Float64Array.from(glimpse.data) });
      out.theta.push(theta);
      out.glimpses.push(glimpse);
      out.logits.push(Array.from(dense(hidden, model.head.weight, model.head.bias)));
    }
    out.probabilities = out.logits.map(softmax);
    out.predictions = out.probabilities.map((p) => p.indexOf(Math.max(...p)));
    out.ms = performance.now() - t0;
    return out;
  }

  // --------------------------------------------------------------------------------- input ----

  /** Deterministic draws for the layout and clutter buttons (mulberry32): the same clicks, the same page. */
  function random(seed) {
    let a = seed >>> 0;
    const next = () => {
      a = (a + 0x6D2B79F5) >>> 0;
      let t = Math.imul(a ^ (a >>> 15), 1 | a);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    return { next, int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)) };  // U{lo..hi}
  }

  /** The input of a state, (S * S) Float64Array: as rstn.live.compose. */
  function compose(spec, bank, state) {
    const L = spec.layout, S = L.canvas, D = L.digit, k = L.clutterSize, image = new Float64Array(S * S);
    state.digits.forEach((id, i) => {
      const [x0, y0] = state.xy[i];
      for (let r = 0; r < D; r++) {
        for (let c = 0; c < D; c++) {
          const v = bank.digits[(id * D + r) * D + c] / 256, p = (y0 + r) * S + x0 + c;
          if (v > image[p]) image[p] = v;
        }
      }
    });
    if (state.clutter && state.patches.length) {
      const clutter = new Float64Array(S * S);  // the generator's separate clutter canvas
      state.patches.forEach((id, j) => {
        const [x0, y0] = state.patchXY[j];
        for (let r = 0; r < k; r++) {
          for (let c = 0; c < k; c++) clutter[(y0 + r) * S + x0 + c] = bank.patches[(id * k + r) * k + c] / 256;
        }
      });
      for (let p = 0; p < S * S; p++) image[p] = Math.min(1, image[p] + clutter[p]);
    }
    return image;
  }

  /** The generator's layout (rstn.data.draw_split, digit_positions): x offset, y0 and slope, y clamped. */
  function generatorLayout(L, rng) {
    const slack = L.canvas - L.nDigits * L.digit, c = Math.floor(slack / 2);
    let offsets;
    if (L.xPlacement === 'abut') {
      const o = c > 0 ? c + rng.int(-c, c - 1) : 0;
      offsets = Array.from({ length: L.nDigits }, () => o);
    } else {
      offsets = Array.from({ length: L.nDigits }, () => rng.int(0, slack)).sort((a, b) => a - b);
    }
    const y0 = rng.int(0, L.canvas - 1), slope = rng.int(L.slope[0], L.slope[1]);
    return offsets.map((o, i) => [L.digit * i + o, Math.min(Math.max(y0 + i * slope, 0), L.canvas - L.digit)]);
  }

  /** The generator's clutter: nClutter patches of the bank at U{0..S - k} each. */
  function generatorClutter(L, nPatches, rng) {
    const patches = [], xy = [];
    for (let j = 0; j < L.nClutter; j++) {
      patches.push(rng.int(0, nPatches - 1));
      xy.push([rng.int(0, L.canvas - L.clutterSize - 1), rng.int(0, L.canvas - L.clutterSize - 1)]);
    }
    return { patches, xy };
  }

  // ---------------------------------------------------------------------------- the explorer ----

  const KEYS = '1 2 3: pick a digit · arrows: move it (Shift: 5 px) · r: random digits · g: generator layout · ' +
    'c: clutter on/off · n: new clutter · t: next test sequence';

  /**
   * Mount the live explorer in `root` with the payload of rstn.live.live_explorer_html: {model, digits
   * (M, 28, 28) uint8, labels, indices, strip, patches (P, k, k) uint8, sequences, layout, title, label, note,
   * stepColors}.
   */
  function mount(root, spec) {
    const model = decodeModel(spec.model), L = spec.layout, S = L.canvas, D = L.digit;
    const bank = { digits: decodeTyped(spec.digits), patches: decodeTyped(spec.patches) };
    const nPatches = spec.patches.shape[0];
    const fromSequence = (k) => {
      const q = spec.sequences[k];
      return { digits: q.digits.slice(), xy: q.xy.map((p) => p.slice()), patches: q.patches.slice(),
        patchXY: q.patchXY.map((p) => p.slice()), clutter: true, sequence: k };
    };
    let state = fromSequence(0), selected = 0, clicks = 0, shown = null, image = null, drag = null;
    const rng = () => random(0x5eed + 7919 * ++clicks);  // each button press draws afresh, reproducibly
    const times = [];

    const view = inputView(S, S);
    view.canvas.tabIndex = 0;
    view.canvas.setAttribute('role', 'application');
    view.canvas.setAttribute('aria-label', 'the input: drag a digit, or use the keys ' + KEYS);
    const crops = el('div', { class: 'rstn-crops' });
    const summary = el('div', { class: 'rstn-summary', 'aria-live': 'polite', 'data-role': 'summary' });
    const timing = el('div', { class: 'rstn-note', 'data-role': 'timing' });

    const slotButtons = [0, 1, 2].slice(0, L.nDigits).map((i) => {
      const b = el('button', { type: 'button', 'data-slot': i });
      b.addEventListener('click', () => { selected = i; render(); });
      return b;
    });
    const stripButtons = spec.strip.map((id) => {
      const c = el('canvas', { class: 'rstn-thumb' });
      const levels = bank.digits.subarray(id * D * D, (id + 1) * D * D);
      drawGray(c, { height: D, width: D, data: Array.from(levels, (v) => v / 256) });
      const b = el('button', { type: 'button', class: 'rstn-strip-digit', 'data-digit': id,
        'aria-label': 'put a ' + spec.labels[id] + ' (test digit #' + spec.indices[id] + ') in the chosen place' }, c);
      // the next place is chosen next: click a 1, then a 7, and they stand side by side
      b.addEventListener('click', () => change(() => {
        state.digits[selected] = id;
        selected = (selected + 1) % L.nDigits;
      }));
      return b;
    });
    const button = (text, role, action) => {
      const b = el('button', { type: 'button', 'data-action': role }, text);
      b.addEventListener('click', action);
      return b;
    };
    const randomDigits = () => change(() => {
      const r = rng();
      state.digits = state.digits.map(() => spec.strip[r.int(0, spec.strip.length - 1)]);
    });
    const layout = () => change(() => { state.xy = generatorLayout(L, rng()); });
    const newClutter = () => change(() => {
      const c = generatorClutter(L, nPatches, rng());
      Object.assign(state, { patches: c.patches, patchXY: c.xy, clutter: true });
    });
    const toggleClutter = () => change(() => { state.clutter = !state.clutter; });
    const clutterBox = el('input', { type: 'checkbox', 'data-action': 'clutter' });
    clutterBox.addEventListener('change', () => change(() => { state.clutter = clutterBox.checked; }));
    const sequenceOption = (q, k) => el('option', { value: k },
      '#' + q.index + ': ' + q.digits.map((id) => spec.labels[id]).join(' '));
    const sequenceSelect = el('select', { 'aria-label': 'a real test sequence', 'data-action': 'sequence' },
      el('option', { value: '', disabled: '' }, 'your own input'), ...spec.sequences.map(sequenceOption));
    const reset = (k) => { state = fromSequence(k); render(); };
    sequenceSelect.addEventListener('change', () => reset(Number(sequenceSelect.value)));

    /** Apply an edit; the input is then no longer a real test sequence. */
    function change(edit) {
      edit();
      state.sequence = null;
      render();
    }

    function move(i, dx, dy) {
      change(() => {
        const [x, y] = state.xy[i];
        state.xy[i] = [Math.min(Math.max(x + dx, 0), S - D), Math.min(Math.max(y + dy, 0), S - D)];
      });
    }

    /** Canvas event -> image pixel coordinates (pixel i covers [i, i + 1)). */
    function pixelAt(event) {
      const r = view.canvas.getBoundingClientRect();
      const cx = (event.clientX - r.left) * view.canvas.width / r.width;
      const cy = (event.clientY - r.top) * view.canvas.height / r.height;
      return [cx / view.scale - view.pad, cy / view.scale - view.pad];
    }

    view.canvas.addEventListener('pointerdown', (event) => {
      const [px, py] = pixelAt(event);
      for (let i = L.nDigits - 1; i >= 0; i--) {  // the last digit is drawn on top
        const [x, y] = state.xy[i];
        if (px >= x && px < x + D && py >= y && py < y + D) {
          selected = i;
          drag = { i, dx: px - x, dy: py - y };
          view.canvas.setPointerCapture(event.pointerId);
          render();
          return;
        }
      }
    });
    view.canvas.addEventListener('pointermove', (event) => {
      if (!drag) return;
      const [px, py] = pixelAt(event), [x, y] = state.xy[drag.i];
      const nx = Math.round(px - drag.dx), ny = Math.round(py - drag.dy);  // move() keeps the digit inside
      if (nx !== x || ny !== y) move(drag.i, nx - x, ny - y);
    });
    const endDrag = () => { drag = null; };
    view.canvas.addEventListener('pointerup', endDrag);
    view.canvas.addEventListener('pointercancel', endDrag);
    view.canvas.addEventListener('keydown', (event) => {
      const step = event.shiftKey ? 5 : 1;
      const arrows = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
      const keys = { r: randomDigits, g: layout, n: newClutter, c: toggleClutter,
        t: () => reset(((state.sequence === null ? -1 : state.sequence) + 1) % spec.sequences.length) };
      const key = event.key.toLowerCase(), plain = !event.ctrlKey && !event.metaKey && !event.altKey;
      if (arrows[event.key]) move(selected, ...arrows[event.key]);
      else if (/^[1-9]$/.test(key) && Number(key) <= L.nDigits) { selected = Number(key) - 1; render(); }
      else if (keys[key] && plain) keys[key]();
      else return;
      event.preventDefault();
    });

    /** Outline each digit's 28 x 28 place (the chosen one solid), then the glimpses with their step numbers. */
    function drawInput(out) {
      const ctx = view.ctx, sc = view.scale, pad = view.pad;
      view.draw({ height: S, width: S, data: image });
      state.xy.forEach(([x, y], i) => {
        ctx.setLineDash(i === selected ? [] : [6, 6]);
        ctx.strokeStyle = i === selected ? '#ffffff' : 'rgba(255, 255, 255, 0.55)';
        ctx.lineWidth = i === selected ? 2 : 1.5;
        ctx.strokeRect((x + pad) * sc, (y + pad) * sc, D * sc, D * sc);
        ctx.fillStyle = ctx.strokeStyle;
        ctx.font = '20px sans-serif';
        ctx.textAlign = 'left';
        ctx.textBaseline = 'bottom';  // bottom left: the glimpse numbers take the top corners first
        ctx.fillText(String(i + 1), (x + pad) * sc + 4, (y + D + pad) * sc - 3);
      });
      ctx.setLineDash([]);
      out.theta.forEach((theta, t) => {
        const color = spec.stepColors[t % spec.stepColors.length], quad = thetaQuad(theta, view);
        strokePolygon(ctx, quad, color, 3);
        labelStep(ctx, quad, t, color);
      });
    }

    /** One figure per step: its glimpse, the digit it reads with its probability, and all ten as bars. */
    function drawCrops(out, truth) {
      crops.replaceChildren(...out.glimpses.map((glimpse, t) => {
        const canvas = el('canvas', { class: 'rstn-image rstn-crop', 'data-step': t });
        drawGray(canvas, glimpse);
        canvas.style.borderColor = spec.stepColors[t % spec.stepColors.length];
        const p = out.probabilities[t], k = out.predictions[t];
        const bars = el('div', { class: 'rstn-probs', 'aria-hidden': 'true' }, ...p.map((v, digit) => {
          const bar = el('span', { class: digit === k ? 'rstn-bar rstn-top' : 'rstn-bar',
            title: digit + ': ' + v.toFixed(3) });
          bar.style.height = Math.max(1, Math.round(40 * v)) + 'px';
          return el('span', { class: 'rstn-bar-col' }, bar, el('span', { class: 'rstn-bar-label' }, String(digit)));
        }));
        const verdict = el('span', { class: k === truth[t] ? 'rstn-ok' : 'rstn-bad' }, String(k));
        const caption = el('figcaption', {}, 'step ' + (t + 1) + ': ', verdict, ' (' + p[k].toFixed(2) + ')');
        return el('figure', {}, canvas, caption, bars);
      }));
    }

    function render() {
      image = compose(spec, bank, state);
      shown = forward(model, image);
      times.push(shown.ms);
      // what the model should read: the digits left to right, as the generator's labels (ties: by place)
      const order = state.digits.map((_, i) => i).sort((a, b) => state.xy[a][0] - state.xy[b][0] || a - b);
      const truth = order.map((i) => spec.labels[state.digits[i]]);
      drawInput(shown);
      drawCrops(shown, truth);
      slotButtons.forEach((b, i) => {
        b.textContent = (i + 1) + ': ' + spec.labels[state.digits[i]];
        b.classList.toggle('rstn-active', i === selected);
      });
      stripButtons.forEach((b) => b.classList.toggle('rstn-active', state.digits.includes(Number(b.dataset.digit))));
      clutterBox.checked = state.clutter;
      sequenceSelect.value = state.sequence === null ? '' : String(state.sequence);
      const wrong = shown.predictions.filter((k, i) => k !== truth[i]).length;
      summary.replaceChildren('placed, left to right: ' + truth.join(' ') + '; predicted ',
        ...shown.predictions.flatMap((k, i) =>
          [i ? ' ' : '', el('span', { class: k === truth[i] ? 'rstn-ok' : 'rstn-bad' }, String(k))]),
        wrong ? ' (' + wrong + ' wrong)' : ' (all right)',
        state.sequence === null ? '' : ': test sequence #' + spec.sequences[state.sequence].index);
      const recent = times.slice(-9).sort((a, b) => a - b);
      timing.textContent = 'forward pass in this browser: ' + shown.ms.toFixed(1) + ' ms (median of the last ' +
        recent.length + ': ' + recent[recent.length >> 1].toFixed(1) + ' ms)';
    }

    const row = (label, ...children) =>
      el('div', { class: 'rstn-row' }, el('span', { class: 'rstn-label' }, label), ...children);
    root.append(
      el('div', { class: 'rstn-title' }, spec.title || 'Live RNN-SPN'),
      el('div', { class: 'rstn-note', 'data-role': 'model' }, spec.note),
      el('div', { class: 'rstn-panels' },
        el('figure', {}, view.canvas,
          el('figcaption', {}, 'the input, ' + S + ' × ' + S + ': drag a digit; the boxes are the glimpses')),
        crops),
      summary,
      el('div', { class: 'rstn-controls' },
        row('place', ...slotButtons, button('random digits', 'random', randomDigits)),
        el('div', { class: 'rstn-row rstn-strip' },
          el('span', { class: 'rstn-label' }, 'test digits'), ...stripButtons),
        row('layout', button('generator layout', 'layout', layout),
          el('label', { class: 'rstn-check' }, clutterBox, ' clutter'),
          button('new clutter', 'new-clutter', newClutter)),
        row('reset to', sequenceSelect)),
      el('div', { class: 'rstn-note' }, 'Keys, with the input focused: ' + KEYS + '.'),
      timing);
    render();

    const copyState = () => JSON.parse(JSON.stringify(state));
    const instance = {
      kind: 'live', root, precision: spec.model.precision, glimpse: model.glimpse, d: model.d,
      /** The model on any input, values (S * S) in [0, 1]: what the browser test compares with PyTorch. */
      forward: (values) => {
        const o = forward(model, values);
        return { theta: o.theta, logits: o.logits, ms: o.ms };
      },
      /** The model on n inputs given as base64 float32 (n, S, S): {logits, theta, ms} per input. */
      forwardBase64: (text) => {
        const all = new Float32Array(base64Bytes(text).buffer), n = all.length / (S * S);
        return Array.from({ length: n }, (_, k) => instance.forward(all.subarray(k * S * S, (k + 1) * S * S)));
      },
      state: () => ({ ...copyState(), selected }),
      image: () => Array.from(image),
      shown: () => ({ theta: shown.theta, logits: shown.logits, probabilities: shown.probabilities,
        predictions: shown.predictions, ms: shown.ms }),
      times: () => times.slice(),
      /** Where image pixel (x, y) is on the page, in CSS pixels: for the test's mouse. */
      clientPoint: (x, y) => {
        const r = view.canvas.getBoundingClientRect();
        return { x: r.left + (x + view.pad) * view.scale * r.width / view.canvas.width,
          y: r.top + (y + view.pad) * view.scale * r.height / view.canvas.height };
      },
    };
    window.rstnLive.instances.push(instance);
    return instance;
  }

  window.rstnLive = {
    version: VERSION, mount, forward, decodeModel, compose, generatorLayout, random, halfToFloat, instances: [],
  };
})();
