#!/usr/bin/env bash
# Copy the browser assets the built book loads into book/_static/vendor, from the npm packages pinned in
# package-lock.json, so that the published book fetches nothing from a CDN. Only the files a page loads are
# copied (the packages hold ~150 MB); the result is committed, so `make book` needs neither npm nor network.
#   MathJax 3 tex-chtml: the combined component, the TeX extensions its autoloader may request, and the
#     CHTML woff fonts it loads relative to its own location (output/chtml/fonts/woff-v2).
#   RequireJS: the AMD loader that the widget manager needs.
#   @jupyter-widgets/html-manager embed-amd.js: renders saved ipywidget state; it bundles
#     @jupyter-widgets/base and /controls (define(...) in the file), so only third-party widget modules would
#     be looked up on a CDN, and _config.yml points that lookup at a local path. Its Font Awesome CSS loads
#     fonts next to the script (webpack publicPath); browsers take the first format they support, woff2.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="$here/../../book/_static/vendor"
cd "$here"
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
nm="$here/node_modules"
rm -rf "$dest"
mkdir -p "$dest/mathjax/output/chtml/fonts" "$dest/mathjax/input/tex" "$dest/html-manager"
cp "$nm/mathjax/es5/tex-chtml.js" "$dest/mathjax/"
cp -r "$nm/mathjax/es5/output/chtml/fonts/woff-v2" "$dest/mathjax/output/chtml/fonts/"
cp -r "$nm/mathjax/es5/input/tex/extensions" "$dest/mathjax/input/tex/"
cp "$nm/mathjax/LICENSE" "$dest/mathjax/LICENSE"
cp "$nm/requirejs/require.js" "$dest/require.js"
cp "$nm/@jupyter-widgets/html-manager/dist/embed-amd.js" "$dest/html-manager/"
cp "$nm/@jupyter-widgets/html-manager/dist/"*.woff2 "$dest/html-manager/"
node -e '
const lock = require("./package-lock.json");
const v = (p) => lock.packages["node_modules/" + p].version;
const lic = (p) => require("./node_modules/" + p + "/package.json").license;
const rows = ["mathjax", "requirejs", "@jupyter-widgets/html-manager"]
  .map((p) => `- ${p} ${v(p)} (${lic(p)})`).join("\n");
console.log(`# Vendored browser assets\n\nCopied by tools/vendor/vendor.sh from npm (versions pinned in tools/vendor/package-lock.json):\n\n${rows}\n`);
' > "$dest/README.md"
du -sh "$dest"
