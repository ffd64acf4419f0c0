// Loaded after vendor/require.js and just before vendor/html-manager/embed-amd.js (see _config.yml,
// nb_ipywidgets_js). The widget bundles load Font Awesome fonts from a webpack public path taken from each
// AMD module's URI ("@jupyter-widgets/..." relative to the page), where nothing exists in the book. Mapping
// those module names onto the vendored folder makes the fonts resolve to the copies next to embed-amd.js.
(function () {
  var dir = new URL("vendor/html-manager", document.currentScript.src).href;
  window.__jupyter_widgets_assets_path__ = dir + "/";
  window.require.config({
    paths: { "@jupyter-widgets": dir, "@jupyter-widgets/html-manager/dist": dir },
  });
})();
