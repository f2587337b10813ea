// softmax-serving playground: plain JavaScript, no dependencies, nothing fetched from
// anywhere but this service. URLs are relative ("softmax", not "/softmax") so the page
// also works when the service is mounted under a path prefix.
//
// Elements the tests rely on: #logits, #temperature, #temperature-value, #bars (each
// .bar with data-probability), #softmax-error, #model-select, #regions,
// #point-probabilities; for image models #drawing, #sketch, #sketch-clear, #image-file and
// #image-probabilities (data-state, data-label, [data-probability] cells); for text models
// #text-panel, #text-input, #text-classify and #text-probabilities (likewise); for models
// of several named inputs #named-panel, one input per model input in #named-fields (its
// data-name the input's name), #named-classify, #named-error and #named-probabilities
// (likewise); on the map, #regions-ood (its data-cells: how many cells are out of
// distribution); the live monitor #monitor (data-state, data-model, data-rows-seen) whose
// every number is a <data> element with data-key naming its field in the monitor's JSON
// ("ood_rate", "features.x1.psi", "predicted_mix.0", ...; "reference.predicted_mix.0" and
// "reference.test_accuracy" from the model's metadata) and its exact value in value.
// Text from the server is only ever set with textContent.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  // --- The API ---------------------------------------------------------------------------

  let apiKey = "";

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  /** GET (no body) or POST (body: a JSON string or a value to serialize) and parse JSON;
   * ``extra``: more request headers. */
  async function api(path, body, extra = {}) {
    const headers = { Accept: "application/json", ...extra };
    const init = { method: body === undefined ? "GET" : "POST", headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = typeof body === "string" ? body : JSON.stringify(body);
    }
    if (apiKey) headers["X-API-Key"] = apiKey;
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      throw new ApiError(0, `could not reach the service (${error.message})`);
    }
    let data = null;
    try {
      data = await response.json();
    } catch {
      // Not JSON: fall back to the status line below.
    }
    if (!response.ok) {
      const said = data && typeof data.error === "string" ? data.error : response.statusText;
      const hint = response.status === 401 ? " (enter an API key at the top of the page)" : "";
      throw new ApiError(response.status, `${response.status}: ${said}${hint}`);
    }
    return data;
  }

  function showError(element, error) {
    element.textContent = error ? error.message : "";
    element.hidden = !error;
  }

  /** Probabilities for people: 6 significant digits (the exact value is in data-probability). */
  const formatProbability = (p) => (p !== 0 && p < 1e-4 ? p.toExponential(5) : p.toPrecision(6));

  // --- Softmax explorer ------------------------------------------------------------------

  const logitsInput = $("logits");
  const slider = $("temperature");
  const temperatureValue = $("temperature-value");
  const bars = $("bars");
  const softmaxError = $("softmax-error");

  const JSON_NUMBER = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$/;
  const LOOSE_NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

  /** The values typed in one field: separated by commas, semicolons or spaces. */
  const tokensOf = (text) => text.split(/[\s,;]+/).filter(Boolean);

  /** A typed number ("41", "-2.5", ".5", "+1", "2.", "1e5") when it is finite, else null. */
  function looseNumber(token) {
    const number = Number(token);
    return LOOSE_NUMBER.test(token) && Number.isFinite(number) ? number : null;
  }

  /**
   * The typed logits as JSON text. A token that is a JSON number goes to the server
   * verbatim, so the server parses exactly what was typed (and judges 1e999 itself);
   * ".5", "+1" or "2." are normalized; anything else is sent as a string, so the
   * server's own error message says what is wrong with it.
   */
  function logitsJson(text) {
    const tokens = tokensOf(text);
    const values = tokens.map((token) => {
      if (JSON_NUMBER.test(token)) return token;
      const number = looseNumber(token);
      return number === null ? JSON.stringify(token) : String(number);
    });
    return { tokens, json: `[${values.join(",")}]` };
  }

  /**
   * The slider holds log10(T). T is rounded to 3 significant digits, so the value shown
   * is exactly the value sent.
   */
  function temperature() {
    return Number((10 ** Number(slider.value)).toPrecision(3));
  }

  function showTemperature() {
    temperatureValue.textContent = temperature().toPrecision(3);
  }

  function renderBars(tokens, probabilities, argmax) {
    const rows = probabilities.map((p, i) => {
      const row = document.createElement("div");
      row.className = i === argmax ? "bar-row top" : "bar-row";

      const label = document.createElement("span");
      label.className = "bar-label";
      label.textContent = `z${i} = ${tokens[i]}`;

      const track = document.createElement("div");
      track.className = "bar-track";
      const bar = document.createElement("div");
      bar.className = "bar";
      // String(p) is the shortest text that parses back to exactly the number received.
      bar.dataset.probability = String(p);
      bar.style.width = `${p * 100}%`;
      track.append(bar);

      const value = document.createElement("span");
      value.className = "bar-value";
      value.textContent = formatProbability(p);
      value.title = String(p);

      row.append(label, track, value);
      return row;
    });
    bars.replaceChildren(...rows);
  }

  // Only the answer to the newest request is shown: each request takes a number and an
  // answer that arrives after a newer request was sent is dropped.
  let softmaxRequest = 0;
  let softmaxTimer = 0;

  function scheduleSoftmax(delay = 150) {
    clearTimeout(softmaxTimer);
    softmaxTimer = setTimeout(runSoftmax, delay);
  }

  async function runSoftmax() {
    const request = ++softmaxRequest;
    const { tokens, json } = logitsJson(logitsInput.value);
    if (tokens.length === 0) {
      bars.replaceChildren();
      bars.dataset.state = "idle";
      delete bars.dataset.request;
      showError(softmaxError, new Error("Type some logits, e.g. 2.0, 4.3, 1.2, -3.1"));
      return;
    }
    // data-request keeps the exact body of the request behind the bars shown.
    const body = `{"logits":${json},"temperature":${temperature()}}`;
    bars.dataset.state = "loading";
    try {
      const answer = await api("softmax", body);
      if (request !== softmaxRequest) return;
      renderBars(tokens, answer.probabilities, answer.argmax);
      bars.classList.remove("stale");
      bars.dataset.request = body;
      bars.dataset.state = "ready";
      showError(softmaxError, null);
    } catch (error) {
      if (request !== softmaxRequest) return;
      // Keep the last good bars, dimmed, under the message.
      bars.classList.add("stale");
      delete bars.dataset.request;
      bars.dataset.state = "error";
      showError(softmaxError, error);
    }
  }

  logitsInput.addEventListener("input", () => scheduleSoftmax());
  slider.addEventListener("input", () => {
    showTemperature();
    scheduleSoftmax();
  });

  // --- Model explorer --------------------------------------------------------------------

  const modelSelect = $("model-select");
  const modelSummary = $("model-summary");
  const modelError = $("model-error");
  const mapNote = $("map-note");
  const mapFigure = $("map");
  const canvas = $("regions");
  const oodCanvas = $("regions-ood");
  const oodCaption = $("ood-caption");
  const pointOod = $("point-ood");
  const pointPanel = $("point-panel");
  const pointCoordinates = $("point-coordinates");
  const pointProbabilities = $("point-probabilities");
  const legend = $("legend");

  const GRID = 60; // cells per side of the decision-region map: one /predict of 3600 rows
  const DEFAULT_RANGE = [-10, 40]; // both axes, when the metadata says nothing of the data

  // Okabe-Ito: distinguishable with the common colour-vision deficiencies.
  const PALETTE = [
    [0, 114, 178],
    [230, 159, 0],
    [0, 158, 115],
    [204, 121, 167],
    [86, 180, 233],
    [213, 94, 0],
    [240, 228, 66],
    [90, 90, 90],
  ];

  function classColour(k) {
    if (k < PALETTE.length) return PALETTE[k];
    // More classes than the palette: hues spread by the golden angle, HSL(h, 55%, 45%).
    const hue = (k * 137.508) % 360;
    const [s, l] = [0.55, 0.45];
    const a = s * Math.min(l, 1 - l);
    const f = (n) => {
      const t = (n + hue / 30) % 12;
      return Math.round(255 * (l - a * Math.max(-1, Math.min(t - 3, 9 - t, 1))));
    };
    return [f(0), f(8), f(4)];
  }

  const css = ([r, g, b]) => `rgb(${r} ${g} ${b})`;

  /**
   * What the map shows now: the model, its extent, the painted grid, which of its cells
   * are out of distribution (row by row from the top; null when the model has no OOD
   * detector) and the clicked point.
   */
  const map = { model: null, extent: null, centres: [], image: null, ood: null, point: null };
  let modelRequest = 0;
  let pointRequest = 0;

  function predictPath(model) {
    const name = encodeURIComponent(model.name);
    return `models/${name}/versions/${encodeURIComponent(model.version)}/predict`;
  }

  /**
   * The square region to draw: the training blob centres plus a margin of 4 standard
   * deviations when the metadata has them, DEFAULT_RANGE otherwise. Square, so one unit
   * is as long on both axes and the regions are not distorted.
   */
  function extentOf(model) {
    const data = (model.training && model.training.data) || {};
    const centres = Array.isArray(data.centers)
      ? data.centers.filter((c) => Array.isArray(c) && c.length === 2 && c.every(Number.isFinite))
      : [];
    if (centres.length === 0) {
      return { x: [...DEFAULT_RANGE], y: [...DEFAULT_RANGE], centres };
    }
    const stds = [data.std].flat().filter(Number.isFinite);
    const margin = Math.max(4 * (stds.length ? Math.max(...stds) : 1), 1);
    const xs = centres.map((c) => c[0]);
    const ys = centres.map((c) => c[1]);
    const x = [Math.min(...xs) - margin, Math.max(...xs) + margin];
    const y = [Math.min(...ys) - margin, Math.max(...ys) + margin];
    const half = Math.max(x[1] - x[0], y[1] - y[0]) / 2;
    const mid = (v) => (v[0] + v[1]) / 2;
    return {
      x: [mid(x) - half, mid(x) + half],
      y: [mid(y) - half, mid(y) + half],
      centres,
    };
  }

  /** Round tick steps: 1, 2 or 5 times a power of ten, about `count` ticks over the span. */
  function ticks([lo, hi], count = 6) {
    const raw = (hi - lo) / count;
    const power = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9 * step; v += step) {
      out.push(Number(v.toPrecision(12)));
    }
    return out;
  }

  function drawAxes(model, extent) {
    const place = (container, values, [lo, hi], vertical) => {
      container.replaceChildren(
        ...values.map((v) => {
          const tick = document.createElement("span");
          tick.textContent = String(v);
          const fraction = (v - lo) / (hi - lo);
          if (vertical) tick.style.top = `${(1 - fraction) * 100}%`;
          else tick.style.left = `${fraction * 100}%`;
          return tick;
        }),
      );
    };
    place($("ticks-x"), ticks(extent.x), extent.x, false);
    place($("ticks-y"), ticks(extent.y), extent.y, true);
    $("axis-x").textContent = model.feature_names[0];
    $("axis-y").textContent = model.feature_names[1];
  }

  function drawLegend(model, ood) {
    const items = model.class_names.map((name, k) => {
      const item = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.background = css(classColour(k));
      item.append(swatch, document.createTextNode(`class ${name}`));
      return item;
    });
    if (ood) {
      const item = document.createElement("span");
      item.id = "legend-ood";
      const swatch = document.createElement("i");
      swatch.className = "ood-swatch";
      item.append(swatch, document.createTextNode("far from the training data (OOD)"));
      items.push(item);
    }
    legend.replaceChildren(...items);
  }

  /**
   * Paint one GRID x GRID image from a columnar answer: hue by argmax, blended with white
   * by how sure the model is (max probability, from 1/K = unsure to 1 = certain).
   */
  function paintGrid(answer, classes) {
    const image = document.createElement("canvas");
    image.width = GRID;
    image.height = GRID;
    const context = image.getContext("2d");
    const pixels = context.createImageData(GRID, GRID);
    const floor = 1 / classes;
    answer.argmax.forEach((k, i) => {
      const sure = (answer.probabilities[i][k] - floor) / (1 - floor);
      const alpha = 0.12 + 0.68 * Math.max(0, Math.min(1, sure));
      const colour = classColour(k);
      for (let c = 0; c < 3; c++) {
        pixels.data[4 * i + c] = Math.round(255 + (colour[c] - 255) * alpha);
      }
      pixels.data[4 * i + 3] = 255;
    });
    context.putImageData(pixels, 0, 0);
    return image;
  }

  /** Data coordinates to canvas pixels (of a canvas `size` pixels wide and high). */
  function toPixel([x, y], size) {
    const { x: ex, y: ey } = map.extent;
    return [((x - ex[0]) / (ex[1] - ex[0])) * size, ((ey[1] - y) / (ey[1] - ey[0])) * size];
  }

  /**
   * Over the regions, on a canvas of its own: a grey wash and hatching on every cell
   * whose answer is out of distribution, so the class colour still shows through.
   */
  function drawOod(size, ratio) {
    oodCanvas.width = size;
    oodCanvas.height = size;
    const context = oodCanvas.getContext("2d");
    context.clearRect(0, 0, size, size);
    if (!map.ood) return;
    const cell = size / GRID;
    const region = new Path2D();
    for (let row = 0; row < GRID; row++) {
      // One rectangle per run of OOD cells in the row.
      for (let col = 0; col < GRID; col++) {
        if (!map.ood[row * GRID + col]) continue;
        const start = col;
        while (col + 1 < GRID && map.ood[row * GRID + col + 1]) col++;
        region.rect(start * cell, row * cell, (col - start + 1) * cell, cell);
      }
    }
    context.save();
    context.clip(region);
    context.fillStyle = "rgb(105 105 105 / 0.4)";
    context.fillRect(0, 0, size, size);
    context.strokeStyle = "rgb(30 30 30 / 0.5)";
    context.lineWidth = ratio;
    const step = 7 * ratio;
    context.beginPath();
    for (let d = -size; d < size; d += step) {
      context.moveTo(d, size);
      context.lineTo(d + size, 0);
    }
    context.stroke();
    context.restore();
  }

  /** The painted grid, the training centres (+) and the clicked point (ringed dot). */
  function redraw() {
    const ratio = window.devicePixelRatio || 1;
    const size = Math.round(canvas.clientWidth * ratio) || canvas.width;
    if (canvas.width !== size) {
      canvas.width = size;
      canvas.height = size;
    }
    const context = canvas.getContext("2d");
    context.imageSmoothingEnabled = false; // crisp cells: one per grid point asked
    context.drawImage(map.image, 0, 0, size, size);
    drawOod(size, ratio);
    context.lineWidth = 2 * ratio;
    context.strokeStyle = "rgb(20 20 20 / 0.7)";
    const arm = 5 * ratio;
    for (const centre of map.centres) {
      const [px, py] = toPixel(centre, size);
      context.beginPath();
      context.moveTo(px - arm, py);
      context.lineTo(px + arm, py);
      context.moveTo(px, py - arm);
      context.lineTo(px, py + arm);
      context.stroke();
    }
    if (map.point) {
      const [px, py] = toPixel(map.point, size);
      context.beginPath();
      context.arc(px, py, 5 * ratio, 0, 2 * Math.PI);
      context.fillStyle = "white";
      context.fill();
      context.strokeStyle = "rgb(20 20 20)";
      context.stroke();
    }
  }

  async function drawRegions(model, request) {
    const extent = extentOf(model);
    const dx = (extent.x[1] - extent.x[0]) / GRID;
    const dy = (extent.y[1] - extent.y[0]) / GRID;
    // Cell centres, row by row from the top (largest x2) down, as the image is laid out.
    const instances = [];
    for (let row = 0; row < GRID; row++) {
      for (let col = 0; col < GRID; col++) {
        instances.push([extent.x[0] + (col + 0.5) * dx, extent.y[1] - (row + 0.5) * dy]);
      }
    }
    canvas.dataset.state = "loading";
    // The grid is the page's own question, not traffic: kept out of the live monitor's
    // window, the feedback store, the prediction log and the shadow (docs/operations.md).
    const answer = await api(
      predictPath(model),
      { instances, format: "columnar" },
      { "X-Softmax-Monitor": "off" },
    );
    if (request !== modelRequest) return;
    // An answer carries `ood` per row when the version has an OOD detector.
    const ood = Array.isArray(answer.ood) ? answer.ood.map(Boolean) : null;
    Object.assign(map, {
      model,
      extent,
      centres: extent.centres,
      image: paintGrid(answer, model.class_names.length),
      ood,
      point: null,
    });
    // For tests and the curious: the region drawn, as [x min, x max, y min, y max].
    canvas.dataset.extent = JSON.stringify([...extent.x, ...extent.y]);
    oodCanvas.dataset.cells = String(ood ? ood.filter(Boolean).length : 0);
    oodCaption.hidden = !ood;
    drawAxes(model, extent);
    drawLegend(model, ood);
    mapFigure.hidden = false;
    pointPanel.hidden = false;
    redraw();
    canvas.dataset.state = "ready";
  }

  /** True when the model takes raw strings (its preprocessing runs in the server). */
  function takesText(model) {
    return Boolean(model.input && model.input.kind === "text");
  }

  /** The model's input description when it takes images, null otherwise. */
  function imageInput(model) {
    const input = model.input;
    return input && input.kind === "image" && Array.isArray(input.shape) ? input : null;
  }

  /** The model's inputs when it takes several, each named (null otherwise). */
  function namedInputs(model) {
    const input = model.input;
    return input && input.kind === "named" && Array.isArray(input.inputs) ? input.inputs : null;
  }

  /** What the model takes, in a few words. */
  function describeInput(model) {
    const image = imageInput(model);
    if (image) {
      const range = image.pixel_range;
      const pixels = Array.isArray(range) ? ` (pixel values ${range.join(" to ")})` : "";
      return `${image.shape.join("x")} images${pixels}`;
    }
    if (takesText(model)) return "raw text";
    const inputs = namedInputs(model);
    if (inputs) return `${inputs.length} named inputs (${inputs.map((i) => i.name).join(", ")})`;
    return `${model.input_dim} features (${model.feature_names.join(", ")})`;
  }

  function describe(model) {
    const parts = [
      `version ${model.version}`,
      describeInput(model),
      `${model.class_names.length} classes`,
      `runtime ${model.runtime}`,
    ];
    const accuracy = model.metrics && model.metrics.test_accuracy;
    if (Number.isFinite(accuracy)) parts.push(`test accuracy ${accuracy.toFixed(3)}`);
    return parts.join(" · ");
  }

  async function selectModel(name) {
    const request = ++modelRequest;
    showError(modelError, null);
    mapFigure.hidden = true;
    pointPanel.hidden = true;
    mapNote.hidden = true;
    modelSummary.textContent = "";
    canvas.dataset.state = "idle";
    map.model = null;
    resetPoint();
    hideDrawing();
    hideText();
    hideNamed();
    hideMonitor();
    try {
      const model = await api(`models/${encodeURIComponent(name)}`);
      if (request !== modelRequest) return;
      modelSummary.textContent = describe(model);
      if (imageInput(model)) {
        showDrawing(model);
      } else if (takesText(model)) {
        showText(model);
      } else if (namedInputs(model)) {
        showNamed(model);
      } else if (model.input_dim !== 2) {
        mapNote.textContent =
          `The decision-region map is for 2-D models only: ${model.name} has ` +
          `${model.input_dim} features.`;
        mapNote.hidden = false;
      } else {
        await drawRegions(model, request);
      }
      // After the map: its own prediction is in the window the monitor shows.
      if (request === modelRequest) showMonitor(model);
    } catch (error) {
      if (request !== modelRequest) return;
      canvas.dataset.state = "error";
      showError(modelError, error);
    }
  }

  async function loadModels() {
    modelSelect.disabled = true;
    showError(modelError, null);
    try {
      const { models } = await api("models");
      const previous = modelSelect.value;
      modelSelect.replaceChildren(
        ...models.map((m) => {
          const option = document.createElement("option");
          option.value = m.name;
          option.textContent = `${m.name} (v${m.default_version})`;
          return option;
        }),
      );
      if (models.length === 0) {
        showError(modelError, new Error("The service has no models loaded."));
        return;
      }
      if (models.some((m) => m.name === previous)) modelSelect.value = previous;
      modelSelect.disabled = false;
      await selectModel(modelSelect.value);
    } catch (error) {
      showError(modelError, error);
    }
  }

  // --- Point probabilities ---------------------------------------------------------------

  /** One row per class: its colour and name, a bar, and the probability (exact in data-). */
  function probabilityTable(model, probabilities, argmax) {
    const table = document.createElement("table");
    const head = table.createTHead().insertRow();
    for (const title of ["class", "", "probability"]) {
      const cell = document.createElement("th");
      cell.textContent = title;
      head.append(cell);
    }
    const body = table.createTBody();
    probabilities.forEach((p, k) => {
      const row = body.insertRow();
      if (k === argmax) row.className = "top";
      const name = row.insertCell();
      const swatch = document.createElement("i");
      swatch.style.background = css(classColour(k));
      name.append(swatch, document.createTextNode(model.class_names[k]));
      const bar = document.createElement("div");
      bar.className = "mini-bar";
      bar.style.width = `${p * 100}%`;
      bar.style.background = css(classColour(k));
      row.insertCell().append(bar);
      const value = row.insertCell();
      value.className = "probability";
      value.dataset.probability = String(p);
      value.textContent = formatProbability(p);
      value.title = String(p);
    });
    return table;
  }

  // --- One prediction, shown alike by every form ------------------------------------------
  //
  // A view is { label, probabilities }: a line naming the most probable class, and where
  // the probability table (or the error) goes; a form's state is { model, request }, the
  // model it asks and the number of its newest request.

  function showPrediction(view, model, prediction, data) {
    const { probabilities, argmax, label } = prediction;
    const top = document.createElement("strong");
    top.textContent = label;
    view.label.replaceChildren(
      document.createTextNode("Most probable class: "),
      top,
      document.createTextNode(` (${formatProbability(probabilities[argmax])})`),
    );
    view.label.hidden = false;
    view.probabilities.replaceChildren(probabilityTable(model, probabilities, argmax));
    Object.assign(view.probabilities.dataset, { ...data, label, state: "ready" });
  }

  function showPredictionError(view, error) {
    view.label.hidden = true;
    view.probabilities.dataset.state = "error";
    delete view.probabilities.dataset.label;
    const message = document.createElement("p");
    message.className = "error";
    message.textContent = error.message;
    view.probabilities.replaceChildren(message);
  }

  function resetPrediction(view) {
    view.label.hidden = true;
    view.label.replaceChildren();
    view.probabilities.replaceChildren();
    view.probabilities.dataset.state = "idle";
    delete view.probabilities.dataset.label;
  }

  /**
   * POST {"instances": [instance]} to the form's model and show the answer in `view`
   * (with `data` on its dataset); an answer to a request older than the form's newest
   * is dropped.
   */
  async function predictOne(form, instance, view, data = {}) {
    const request = ++form.request;
    const model = form.model;
    view.probabilities.dataset.state = "loading";
    try {
      const answer = await api(predictPath(model), { instances: [instance] });
      if (request === form.request) showPrediction(view, model, answer.predictions[0], data);
    } catch (error) {
      if (request === form.request) showPredictionError(view, error);
    }
  }

  /** Whether the clicked point is out of distribution, in words (nothing without a detector). */
  function showPointOod(prediction) {
    pointOod.hidden = typeof prediction.ood !== "boolean";
    if (pointOod.hidden) return;
    const distance = Number.isFinite(prediction.ood_distance)
      ? ` (OOD distance ${prediction.ood_distance.toPrecision(3)})`
      : "";
    pointOod.textContent = prediction.ood
      ? `Far from the training data${distance}: do not trust this answer, however sure.`
      : `Within reach of the training data${distance}.`;
    pointOod.classList.toggle("far", prediction.ood);
    pointOod.dataset.ood = String(prediction.ood);
  }

  function resetPoint() {
    ++pointRequest;
    map.point = null;
    pointOod.hidden = true;
    delete pointOod.dataset.ood;
    pointCoordinates.textContent = "Click the map.";
    pointProbabilities.replaceChildren();
    pointProbabilities.dataset.state = "idle";
  }

  /** Rounded to the map's resolution (a pixel is ~0.1 units on the default map). */
  function roundToPixel(value, unitsPerPixel) {
    const digits = Math.max(0, Math.min(12, Math.ceil(-Math.log10(unitsPerPixel))));
    return Number(value.toFixed(digits));
  }

  async function predictPoint(x, y) {
    const request = ++pointRequest;
    const model = map.model;
    map.point = [x, y];
    redraw();
    const [f1, f2] = model.feature_names;
    pointCoordinates.textContent = `${f1} = ${x}, ${f2} = ${y}`;
    pointProbabilities.dataset.state = "loading";
    try {
      const answer = await api(predictPath(model), { instances: [[x, y]] });
      if (request !== pointRequest) return;
      const { probabilities, argmax, label } = answer.predictions[0];
      showPointOod(answer.predictions[0]);
      pointProbabilities.replaceChildren(probabilityTable(model, probabilities, argmax));
      Object.assign(pointProbabilities.dataset, {
        x: String(x),
        y: String(y),
        label,
        state: "ready",
      });
    } catch (error) {
      if (request !== pointRequest) return;
      pointProbabilities.dataset.state = "error";
      pointProbabilities.replaceChildren();
      const message = document.createElement("p");
      message.className = "error";
      message.textContent = error.message;
      pointProbabilities.append(message);
    }
  }

  canvas.addEventListener("click", (event) => {
    if (!map.model || canvas.dataset.state !== "ready") return;
    const rect = canvas.getBoundingClientRect();
    const { x: ex, y: ey } = map.extent;
    const unitsPerPixel = (ex[1] - ex[0]) / rect.width;
    const fx = (event.clientX - rect.left) / rect.width;
    const fy = (event.clientY - rect.top) / rect.height;
    predictPoint(
      roundToPixel(ex[0] + fx * (ex[1] - ex[0]), unitsPerPixel),
      roundToPixel(ey[1] - fy * (ey[1] - ey[0]), unitsPerPixel),
    );
  });

  modelSelect.addEventListener("change", () => selectModel(modelSelect.value));
  $("models-reload").addEventListener("click", loadModels);
  window.addEventListener("resize", () => map.image && redraw());

  // --- Drawing canvas (image models) ------------------------------------------------------

  const drawing = $("drawing");
  const sketchCanvas = $("sketch");
  const sketchContext = sketchCanvas.getContext("2d");
  const brush = $("brush");
  const brushValue = $("brush-value");
  const fileInput = $("image-file");
  const imageSource = $("image-source");
  const uploadPreview = $("upload-preview");
  const imageView = { label: $("image-label"), probabilities: $("image-probabilities") };
  const imageProbabilities = imageView.probabilities;

  // The canvas is 224 pixels on its longer side (shown at 280 CSS pixels; the aspect ratio
  // is the model's). The server does the downscaling to the model's height x width, with a
  // bilinear filter that averages over whole blocks of canvas pixels: 224 = 8 x 28, so for
  // 8x8 models (scikit-learn's digits) and 28x28 ones (MNIST) every model pixel is the mean
  // of an exact 28x28 or 8x8 block, and a stroke keeps the soft edges those datasets have.
  // Large enough to draw on comfortably, small enough that the PNG sent after each stroke
  // is a few kilobytes; the 28-pixel default brush is one pixel of an 8x8 model's input,
  // three and a half of a 28x28 one, about the pen width of both datasets.
  const SKETCH_SIZE = 224;
  // After a stroke ends, wait this long for the next one before asking the server, so a
  // character drawn in quick strokes (a 4, a crossed 7) costs one request, not several.
  const STROKE_PAUSE_MS = 150;

  /** The image model shown, and the state of the drawing and of its requests. */
  const sketch = { model: null, pointer: null, last: null, timer: 0, request: 0, strokes: 0 };

  function paintBlack() {
    // Ink is white on black: high pixel values where the pen went, as in the digits data.
    sketchContext.fillStyle = "#000";
    sketchContext.fillRect(0, 0, sketchCanvas.width, sketchCanvas.height);
  }

  function resetImageResult(message) {
    ++sketch.request; // an answer still on its way is dropped
    clearTimeout(sketch.timer);
    imageSource.textContent = message;
    uploadPreview.hidden = true;
    uploadPreview.removeAttribute("src");
    resetPrediction(imageView);
    delete imageProbabilities.dataset.source;
  }

  function clearSketch() {
    sketch.pointer = null;
    sketch.strokes = 0;
    sketchCanvas.dataset.strokes = "0";
    paintBlack();
    resetImageResult("Draw something.");
  }

  function hideDrawing() {
    sketch.model = null;
    drawing.hidden = true;
    clearSketch();
  }

  function showDrawing(model) {
    sketch.model = model;
    const [height, width] = imageInput(model).shape;
    const scale = SKETCH_SIZE / Math.max(height, width);
    sketchCanvas.width = Math.max(1, Math.round(width * scale));
    sketchCanvas.height = Math.max(1, Math.round(height * scale));
    clearSketch();
    drawing.hidden = false;
  }

  /** Where a pointer event is, in canvas pixels (the canvas is shown scaled). */
  function sketchPoint(event) {
    const rect = sketchCanvas.getBoundingClientRect();
    return [
      ((event.clientX - rect.left) * sketchCanvas.width) / rect.width,
      ((event.clientY - rect.top) * sketchCanvas.height) / rect.height,
    ];
  }

  function ink(from, to) {
    sketchContext.strokeStyle = "#fff";
    sketchContext.fillStyle = "#fff";
    sketchContext.lineWidth = Number(brush.value);
    sketchContext.lineCap = "round";
    sketchContext.lineJoin = "round";
    if (from[0] === to[0] && from[1] === to[1]) {
      sketchContext.beginPath();
      sketchContext.arc(to[0], to[1], Number(brush.value) / 2, 0, 2 * Math.PI);
      sketchContext.fill();
      return;
    }
    sketchContext.beginPath();
    sketchContext.moveTo(...from);
    sketchContext.lineTo(...to);
    sketchContext.stroke();
  }

  sketchCanvas.addEventListener("pointerdown", (event) => {
    if (!sketch.model || sketch.pointer !== null) return;
    if (event.pointerType === "mouse" && event.button !== 0) return;
    event.preventDefault();
    clearTimeout(sketch.timer); // a new stroke: the request waits until it ends
    sketchCanvas.setPointerCapture(event.pointerId);
    sketch.pointer = event.pointerId;
    sketch.last = sketchPoint(event);
    ink(sketch.last, sketch.last);
  });

  sketchCanvas.addEventListener("pointermove", (event) => {
    if (event.pointerId !== sketch.pointer) return;
    // A fast hand moves further than one event per frame: draw through every sample.
    const samples = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
    for (const sample of samples.length ? samples : [event]) {
      const point = sketchPoint(sample);
      ink(sketch.last, point);
      sketch.last = point;
    }
  });

  function endStroke(event) {
    if (event.pointerId !== sketch.pointer) return;
    sketch.pointer = null;
    sketch.strokes += 1;
    sketchCanvas.dataset.strokes = String(sketch.strokes);
    // Pending from now: whatever is shown is older than the drawing.
    imageProbabilities.dataset.state = "loading";
    clearTimeout(sketch.timer);
    sketch.timer = setTimeout(predictDrawing, STROKE_PAUSE_MS);
  }

  sketchCanvas.addEventListener("pointerup", endStroke);
  sketchCanvas.addEventListener("pointercancel", endStroke);
  // Capture lost without a pointerup (the window lost focus, ...): the stroke ends there.
  sketchCanvas.addEventListener("lostpointercapture", endStroke);

  function predictDrawing() {
    if (!sketch.model || sketch.strokes === 0) return;
    const png = sketchCanvas.toDataURL("image/png");
    uploadPreview.hidden = true;
    uploadPreview.removeAttribute("src");
    predictImage(png.slice(png.indexOf(",") + 1), "drawing", "Your drawing:");
  }

  /** POST one image file (base64) as {"instances": [{"b64": ...}]}; show the answer. */
  function predictImage(b64, source, description) {
    imageSource.textContent = description;
    return predictOne(sketch, { b64 }, imageView, { source });
  }

  fileInput.addEventListener("change", () => {
    const file = fileInput.files && fileInput.files[0];
    if (!file || !sketch.model) return;
    const request = ++sketch.request;
    clearTimeout(sketch.timer);
    imageProbabilities.dataset.state = "loading";
    const reader = new FileReader();
    reader.addEventListener("load", () => {
      if (request !== sketch.request) return;
      // The file itself, as it is on disk: the server decodes, converts and resizes it.
      const url = String(reader.result);
      uploadPreview.src = url;
      uploadPreview.alt = `The uploaded image ${file.name}`;
      uploadPreview.hidden = false;
      predictImage(url.slice(url.indexOf(",") + 1), "file", `${file.name}:`);
    });
    reader.addEventListener("error", () => {
      if (request !== sketch.request) return;
      showPredictionError(imageView, new Error(`could not read ${file.name}`));
    });
    reader.readAsDataURL(file);
    fileInput.value = ""; // choosing the same file again sends it again
  });

  $("sketch-clear").addEventListener("click", clearSketch);
  brush.addEventListener("input", () => {
    brushValue.textContent = `${brush.value} px`;
  });

  // --- A text box (text models) ------------------------------------------------------------

  const textPanel = $("text-panel");
  const textInput = $("text-input");
  const textView = { label: $("text-label"), probabilities: $("text-probabilities") };
  /** The text model shown, and the number of the latest request (older answers are dropped). */
  const text = { model: null, request: 0 };

  function hideText() {
    ++text.request;
    text.model = null;
    textPanel.hidden = true;
    resetPrediction(textView);
  }

  function showText(model) {
    text.model = model;
    textPanel.hidden = false;
  }

  textPanel.addEventListener("submit", (event) => {
    event.preventDefault();
    // The string as typed: the server runs the model's own text preprocessing.
    if (text.model) predictOne(text, textInput.value, textView);
  });

  // --- A form of named inputs (models of several inputs) ----------------------------------
  //
  // One field per input, in the metadata's order: a string input takes the text as typed
  // (the server runs the model's lookup); a numeric input of one value takes a number; one
  // of several values (shape [3], [2, 2], ...) takes them all, separated by commas, in
  // row-major order. Values are checked here first, so a typo gets a message naming the
  // field instead of a request; what only the server can judge (a number beyond float32, a
  // fraction for an integer input) comes back as its 422, shown as for every other model.

  const namedPanel = $("named-panel");
  const namedFields = $("named-fields");
  const namedError = $("named-error");
  const namedView = { label: $("named-label"), probabilities: $("named-probabilities") };
  /** The model shown, and the number of the latest request (older answers are dropped). */
  const named = { model: null, request: 0 };

  /** A value the page refuses to send, and the field that holds it. */
  class FieldError extends Error {
    constructor(field, message) {
      super(message);
      this.field = field;
    }
  }

  const sizeOf = (shape) => shape.reduce((size, d) => size * d, 1);

  /** What a field takes, in words: "text", "number", "3 numbers" or "2x2 = 4 numbers". */
  function fieldHint(spec) {
    if (spec.kind === "text") return "text";
    const size = sizeOf(spec.shape);
    if (size === 1) return "number";
    const dims = spec.shape.length > 1 ? `${spec.shape.join("x")} = ` : "";
    return `${dims}${size} numbers, comma-separated`;
  }

  /** The label and the input of the field for `spec`, the model's input number `index`. */
  function namedField(spec, index) {
    const field = document.createElement("input");
    Object.assign(field, { type: "text", id: `named-input-${index}`, autocomplete: "off" });
    field.spellcheck = false;
    field.dataset.name = spec.name;
    if (spec.kind !== "text") field.inputMode = "decimal";
    const label = document.createElement("label");
    label.htmlFor = field.id;
    const hint = document.createElement("span");
    hint.className = "subtle";
    hint.textContent = ` (${fieldHint(spec)})`;
    label.append(document.createTextNode(spec.name), hint);
    return [label, field];
  }

  function showNamed(model) {
    named.model = model;
    namedFields.replaceChildren(...namedInputs(model).flatMap(namedField));
    namedPanel.hidden = false;
  }

  function hideNamed() {
    ++named.request;
    named.model = null;
    namedPanel.hidden = true;
    namedFields.replaceChildren();
    showError(namedError, null);
    resetPrediction(namedView);
  }

  /** Row-major `values` as a nested array of `shape` (a flat list for one dimension). */
  function reshape(values, shape) {
    if (shape.length <= 1) return values;
    const step = values.length / shape[0];
    const rows = Array.from({ length: shape[0] }, (_, i) => values.slice(i * step, (i + 1) * step));
    return rows.map((row) => reshape(row, shape.slice(1)));
  }

  /** What `field` holds for input `spec`: the string, a number, or numbers in its shape. */
  function fieldValue(spec, field) {
    if (spec.kind === "text") return field.value;
    const tokens = tokensOf(field.value);
    const size = sizeOf(spec.shape);
    const expected = `${spec.name}: expected ${size === 1 ? "a number" : `${size} numbers`}`;
    if (tokens.length !== size) {
      const some = tokens.slice(0, 6).join(", ") + (tokens.length > 6 ? ", ..." : "");
      const received = tokens.length === 0 ? "nothing" : `${tokens.length}: ${some}`;
      throw new FieldError(field, `${expected}, received ${received}`);
    }
    const numbers = tokens.map((token) => {
      const number = looseNumber(token);
      if (number === null) throw new FieldError(field, `${expected}, received "${token}"`);
      return number;
    });
    return spec.shape.length === 1 && size === 1 ? numbers[0] : reshape(numbers, spec.shape);
  }

  /** The instance the fields describe, naming each input; FieldError at the first bad one. */
  function namedInstance(model) {
    const entries = namedInputs(model).map((spec, i) => [
      spec.name,
      fieldValue(spec, $(`named-input-${i}`)),
    ]);
    return Object.fromEntries(entries); // own keys, even one named "__proto__"
  }

  function refuseField(error) {
    ++named.request; // an answer still on its way was for other values
    resetPrediction(namedView);
    error.field.setAttribute("aria-invalid", "true");
    error.field.focus();
    showError(namedError, error);
  }

  namedPanel.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!named.model) return;
    for (const field of namedFields.querySelectorAll("input")) {
      field.removeAttribute("aria-invalid");
    }
    let instance;
    try {
      instance = namedInstance(named.model);
    } catch (error) {
      if (!(error instanceof FieldError)) throw error;
      refuseField(error);
      return;
    }
    showError(namedError, null);
    predictOne(named, instance, namedView);
  });

  // --- Live monitor ------------------------------------------------------------------------
  //
  // The selected version's window against its training references: the predicted-class
  // mix beside the training one, the PSI of each feature and of the mix against the usual
  // thresholds, and the scalar signals beside their training values, each with a verdict
  // in words using the rules of deploy/prometheus/alerts.yml. Refreshed on demand and,
  // while the box is ticked and the tab is visible, every MONITOR_EVERY_MS.

  const monitorSection = $("monitor");
  const monitorStatus = $("monitor-status");
  const monitorError = $("monitor-error");
  const monitorReason = $("monitor-reason");
  const monitorBody = $("monitor-body");
  const monitorAuto = $("monitor-auto");
  const monitorMix = $("monitor-mix");
  const monitorPsi = $("monitor-psi");
  const monitorSignals = $("monitor-signals");

  const MONITOR_EVERY_MS = 5000;
  const PSI_SOME = 0.1; // below: no shift
  const PSI_SHIFT = 0.25; // above: a shift
  const PSI_AXIS = 0.5; // the PSI bars' scale; longer ones are cut

  /** The model watched, the number of the newest request, the auto-refresh timer. */
  const monitor = { model: null, request: 0, timer: 0 };

  /** An element with a class and children (strings become text nodes). */
  function el(tag, className, ...children) {
    const element = document.createElement(tag);
    if (className) element.className = className;
    element.append(...children);
    return element;
  }

  /** A number as a <data> element: shown as `text`, exact in value, named by data-key. */
  function num(key, value, text) {
    const element = el("data", "num", text);
    element.value = String(value);
    element.dataset.key = key;
    return element;
  }

  const isNumber = (v) => typeof v === "number" && Number.isFinite(v);
  const percent = (v) => (v === 0 ? "0 %" : `${(v * 100).toPrecision(3)} %`);
  const decimal = (v) => v.toPrecision(3);

  /** The number, or a dash for what is not measured (null). */
  const shown = (key, value, format) => (isNumber(value) ? num(key, value, format(value)) : "–");

  /** A horizontal bar of `fraction` (0..1) of its track, in `colour` or of `className`. */
  function bar(fraction, className, colour, key) {
    const element = el("div", `mbar ${className}`);
    element.style.width = `${Math.max(0, Math.min(1, fraction)) * 100}%`;
    if (colour) element.style.background = colour;
    if (key) element.dataset.key = key;
    return element;
  }

  function monitorPath(model) {
    const name = encodeURIComponent(model.name);
    return `models/${name}/versions/${encodeURIComponent(model.version)}/monitor`;
  }

  function hideMonitor() {
    ++monitor.request; // an answer still on its way is dropped
    clearTimeout(monitor.timer);
    monitor.model = null;
    monitorSection.hidden = true;
    monitorSection.dataset.state = "idle";
    delete monitorSection.dataset.model;
    delete monitorSection.dataset.rowsSeen;
  }

  function showMonitor(model) {
    monitor.model = model;
    monitorSection.hidden = false;
    refreshMonitor();
  }

  function scheduleMonitor() {
    clearTimeout(monitor.timer);
    if (monitor.model && monitorAuto.checked) {
      monitor.timer = setTimeout(() => {
        if (document.hidden) scheduleMonitor(); // nobody looks: ask later
        else refreshMonitor();
      }, MONITOR_EVERY_MS);
    }
  }

  async function refreshMonitor() {
    const model = monitor.model;
    if (!model) return;
    clearTimeout(monitor.timer);
    const request = ++monitor.request;
    monitorSection.dataset.state = "loading";
    try {
      const summary = await api(monitorPath(model));
      if (request !== monitor.request) return;
      showError(monitorError, null);
      renderMonitor(model, summary);
    } catch (error) {
      if (request !== monitor.request) return;
      monitorSection.dataset.state = "error";
      showError(monitorError, error);
    }
    scheduleMonitor();
  }

  /** What the status line says: the version, the window's rows, the time of the answer. */
  function monitorStatusLine(summary) {
    const parts = [`version ${summary.version}`];
    if (summary.monitored) {
      parts.push(
        " · window: the last ",
        num("window_rows", summary.window_rows ?? 0, String(summary.window_rows ?? 0)),
        ` of `,
        num("rows_seen", summary.rows_seen ?? 0, String(summary.rows_seen ?? 0)),
        ` answered rows (it holds ${summary.window})`,
      );
      if (isNumber(summary.reference_rows)) {
        parts.push(
          " · training: ",
          num("reference_rows", summary.reference_rows, String(summary.reference_rows)),
          " rows",
        );
      }
    }
    parts.push(` · as of ${new Date().toLocaleTimeString()}`);
    return parts;
  }

  function renderMonitor(model, summary) {
    monitorSection.dataset.model = model.name;
    monitorStatus.replaceChildren(...monitorStatusLine(summary));
    monitorSection.dataset.rowsSeen = String(summary.rows_seen ?? 0);
    if (!summary.monitored) {
      const reason = String(summary.reason ?? "no reason given");
      monitorReason.textContent = `Not monitored: ${reason}${/[.!?]$/.test(reason) ? "" : "."}`;
      monitorReason.hidden = false;
      monitorBody.hidden = true;
      monitorSection.dataset.state = "unmonitored";
      return;
    }
    if (!summary.window_rows) {
      monitorReason.textContent =
        "Nothing in the window yet: the signals appear with the version's first answers.";
      monitorReason.hidden = false;
      monitorBody.hidden = true;
      monitorSection.dataset.state = "empty";
      return;
    }
    monitorReason.hidden = true;
    const reference = model.monitoring || {};
    monitorMix.replaceChildren(...mixRows(model, summary.predicted_mix, reference.predicted_mix));
    monitorPsi.replaceChildren(...psiRows(summary));
    monitorSignals.replaceChildren(...signalRows(model, summary));
    monitorBody.hidden = false;
    monitorSection.dataset.state = "ready";
  }

  /** One row per class: the window's share (its colour) over the training's (grey). */
  function mixRows(model, mix, referenceMix) {
    const training = Array.isArray(referenceMix) ? referenceMix : [];
    const scale = Math.max(...mix, ...training.filter(isNumber), 1e-9);
    return mix.map((share, k) => {
      const name = model.class_names[k] ?? String(k);
      const expected = training[k];
      const track = el(
        "div",
        "mbar-track pair",
        bar(share / scale, "window", css(classColour(k)), `predicted_mix.${k}`),
        bar(isNumber(expected) ? expected / scale : 0, "reference"),
      );
      const values = el(
        "span",
        "mbar-values",
        shown(`predicted_mix.${k}`, share, percent),
        el("span", "subtle", " vs "),
        shown(`reference.predicted_mix.${k}`, expected, percent),
      );
      return el("div", "mbar-row", el("span", "mbar-label", `class ${name}`), track, values);
    });
  }

  /** In words, where a PSI stands against the usual thresholds. */
  function psiVerdict(value) {
    if (!isNumber(value)) return ["", "not measured"];
    if (value > PSI_SHIFT) return ["shift", "shift"];
    if (value >= PSI_SOME) return ["some", "some shift"];
    return ["ok", "no shift"];
  }

  /** A PSI bar on the 0..PSI_AXIS scale, with the two thresholds drawn across its track. */
  function psiRow(label, key, value, extra) {
    const [zone, words] = psiVerdict(value);
    const track = el("div", "mbar-track psi");
    for (const threshold of [PSI_SOME, PSI_SHIFT]) {
      const line = el("span", "threshold");
      line.style.left = `${(threshold / PSI_AXIS) * 100}%`;
      track.append(line);
    }
    if (isNumber(value)) {
      const cut = value > PSI_AXIS ? " cut" : "";
      track.prepend(bar(value / PSI_AXIS, `zone-${zone}${cut}`, null, key));
    }
    const verdict = el("span", `verdict ${zone}`, words);
    return el(
      "div",
      "mbar-row psi-row",
      el("span", "mbar-label", label),
      track,
      el("span", "mbar-values", shown(key, value, decimal), " ", verdict),
      el("span", "missing subtle", ...extra),
    );
  }

  function psiRows(summary) {
    const head = el(
      "div",
      "mbar-row psi-row head subtle",
      el("span", "", ""),
      el("span", "", ""),
      el("span", "", "PSI"),
      el("span", "", "missing (training)"),
    );
    const rows = [
      head,
      psiRow("class mix", "predicted_mix_psi", summary.predicted_mix_psi, []),
    ];
    for (const feature of summary.features || []) {
      const key = `features.${feature.name}`;
      rows.push(
        psiRow(feature.name, `${key}.psi`, feature.psi, [
          shown(`${key}.missing`, feature.missing, percent),
          " (",
          shown(`${key}.reference_missing`, feature.reference_missing, percent),
          ")",
        ]),
      );
    }
    const axis = el("div", "psi-axis");
    for (const [at, text] of [
      [0, "0"],
      [PSI_SOME, "0.1"],
      [PSI_SHIFT, "0.25"],
      [PSI_AXIS, "0.5"],
    ]) {
      const tick = el("span", "", text);
      tick.style.left = `${(at / PSI_AXIS) * 100}%`;
      axis.append(tick);
    }
    rows.push(el("div", "mbar-row psi-row", el("span", "", ""), axis));
    if (!(summary.features || []).length) {
      rows.push(
        el(
          "p",
          "subtle monitor-note",
          "The inputs are not measured for this model (its input is not a table of its " +
            "own numbers): only the output-side signals are.",
        ),
      );
    }
    return rows;
  }

  /**
   * One scalar signal: the window's (`live`) value beside the training one, as two bars on a
   * common scale (`scale`: the largest of the two unless given) and as numbers, with
   * a verdict [zone, words].
   */
  function signalRow(title, live, training, format, verdict, scale) {
    const top = scale ?? Math.max(live.value ?? 0, training.value ?? 0, 1e-12);
    const bars = el(
      "div",
      "mbar-track pair",
      bar(isNumber(live.value) ? live.value / top : 0, "window signal", null, live.key),
      bar(isNumber(training.value) ? training.value / top : 0, "reference"),
    );
    const numbers = el(
      "span",
      "mbar-values",
      shown(live.key, live.value, format),
      el("span", "subtle", ` ${live.words ?? "window"} · `),
      shown(training.key, training.value, format),
      el("span", "subtle", ` ${training.words ?? "training"}`),
    );
    const [zone, words] = verdict;
    return el(
      "div",
      "signal-row",
      el("span", "signal-title", title),
      bars,
      numbers,
      el("span", `verdict ${zone}`, words),
    );
  }

  function signalRows(model, summary) {
    const rows = [];
    const ood = summary.ood_rate;
    const oodTraining = summary.reference_ood_rate;
    let oodVerdict = ["", "this version has no OOD detector"];
    if (isNumber(ood) && isNumber(oodTraining)) {
      if (ood > 3 * oodTraining && ood > 0.05) {
        oodVerdict = ["shift", "far more inputs far from the training data than in training"];
      } else if (ood > oodTraining) {
        oodVerdict = ["some", "above training, below the alert (3 × training and 5 %)"];
      } else {
        oodVerdict = ["ok", "no more than in training"];
      }
    }
    rows.push(
      signalRow(
        "Far from the training data (OOD rate)",
        { key: "ood_rate", value: ood },
        { key: "reference_ood_rate", value: oodTraining },
        percent,
        oodVerdict,
      ),
    );

    const entropy = summary.mean_entropy;
    const entropyTraining = summary.reference_mean_entropy;
    let entropyVerdict = ["", "no training value"];
    if (isNumber(entropy) && isNumber(entropyTraining)) {
      if (entropy > 1.5 * entropyTraining + 0.05) {
        entropyVerdict = ["shift", "far less sure than in training"];
      } else if (entropy > entropyTraining) {
        entropyVerdict = ["some", "less sure than in training, below the alert"];
      } else {
        entropyVerdict = ["ok", "as sure as in training, or surer"];
      }
    }
    rows.push(
      signalRow(
        "Mean entropy (nats; 0 is certain)",
        { key: "mean_entropy", value: entropy },
        { key: "reference_mean_entropy", value: entropyTraining },
        decimal,
        entropyVerdict,
      ),
    );

    const estimate = summary.estimated_accuracy;
    const tested = model.metrics && model.metrics.test_accuracy;
    let estimateVerdict = ["", "no test accuracy to compare with"];
    if (isNumber(estimate) && isNumber(tested)) {
      estimateVerdict =
        estimate < tested - 0.05
          ? ["some", "the model is less sure than on its test set"]
          : ["ok", "as sure as on its test set"];
    }
    rows.push(
      signalRow(
        "Estimated accuracy (no labels: the mean top-1 probability)",
        { key: "estimated_accuracy", value: estimate },
        { key: "reference.test_accuracy", value: tested, words: "test set" },
        decimal,
        estimateVerdict,
        1,
      ),
    );

    const feedback = summary.feedback;
    if (feedback && isNumber(feedback.accuracy)) {
      const below = isNumber(estimate) && feedback.accuracy < estimate - 0.05;
      const title = el(
        "span",
        "",
        "Accuracy on reported labels (",
        num("feedback.rows", feedback.rows, String(feedback.rows)),
        " rows; log loss ",
        shown("feedback.log_loss", feedback.log_loss, decimal),
        ", ECE ",
        shown("feedback.ece", feedback.ece, decimal),
        ")",
      );
      rows.push(
        signalRow(
          title,
          { key: "feedback.accuracy", value: feedback.accuracy, words: "labelled" },
          { key: "estimated_accuracy", value: estimate, words: "estimated" },
          decimal,
          below
            ? ["shift", "5 points or more below the label-free estimate"]
            : ["ok", "in line with the label-free estimate"],
          1,
        ),
      );
    } else {
      rows.push(
        el(
          "p",
          "subtle monitor-note",
          "Accuracy on true labels: none reported yet (a client reports them with POST " +
            `/models/${model.name}/feedback, when feedback is on).`,
        ),
      );
    }
    return rows;
  }

  $("monitor-refresh").addEventListener("click", refreshMonitor);
  monitorAuto.addEventListener("change", scheduleMonitor);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && monitor.model && monitorAuto.checked) refreshMonitor();
  });

  // --- The API key: in memory only, sent as X-API-Key -------------------------------------

  const keyInput = $("api-key");
  let keyTimer = 0;

  function applyKey() {
    clearTimeout(keyTimer);
    apiKey = keyInput.value.trim();
    runSoftmax();
    loadModels();
  }

  keyInput.addEventListener("input", () => {
    clearTimeout(keyTimer);
    keyTimer = setTimeout(applyKey, 400);
  });
  // Enter applies the key at once; the form itself is never submitted.
  $("api-key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    applyKey();
  });

  // --- Start -----------------------------------------------------------------------------

  showTemperature();
  runSoftmax();
  loadModels();
})();
