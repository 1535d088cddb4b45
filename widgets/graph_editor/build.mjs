// Build the GraphEditor's browser half: one self-contained ES module and one CSS file.
//
//   npm run build                      -> ../../chimera_lab/jupyter/static/graph_editor.{js,css}
//   npm run build -- --outdir DIR      -> DIR/graph_editor.{js,css}
//
// The build is deterministic (same sources and lock file -> same bytes). The first line of graph_editor.js
// names the sha256 of the sources, computed by sourcesDigest() below and, identically, by digest.py (so a
// Python test can tell whether the committed bundle is current without npm):
//
//   files  = package.json, package-lock.json, build.mjs and every regular file under src/ (recursively),
//            as paths relative to this folder with "/" separators, sorted by their UTF-8 bytes;
//   digest = sha256 over, for each file in that order:
//            utf8(path) + b"\0" + utf8(decimal length of content) + b"\0" + content
//            where content is the file's bytes with every CRLF replaced by LF.
import * as esbuild from "esbuild";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const TOP_FILES = ["package.json", "package-lock.json", "build.mjs"];

function walk(rel) {
  const out = [];
  for (const entry of readdirSync(path.join(HERE, rel), { withFileTypes: true })) {
    const child = `${rel}/${entry.name}`;
    if (entry.isDirectory()) out.push(...walk(child));
    else if (entry.isFile()) out.push(child);
  }
  return out;
}

export function sourceFiles() {
  const files = [...TOP_FILES, ...walk("src")];
  return files.sort((a, b) => Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8")));
}

export function sourcesDigest() {
  const hash = createHash("sha256");
  for (const rel of sourceFiles()) {
    const raw = readFileSync(path.join(HERE, rel));
    const content = Buffer.from(raw.toString("latin1").replaceAll("\r\n", "\n"), "latin1");
    hash.update(Buffer.from(rel, "utf8"));
    hash.update(Buffer.from([0]));
    hash.update(Buffer.from(String(content.length), "utf8"));
    hash.update(Buffer.from([0]));
    hash.update(content);
  }
  return hash.digest("hex");
}

function outDir(argv) {
  const i = argv.indexOf("--outdir");
  if (i >= 0 && argv[i + 1]) return path.resolve(argv[i + 1]);
  return path.resolve(HERE, "../../chimera_lab/jupyter/static");
}

async function main() {
  const outdir = outDir(process.argv.slice(2));
  const digest = sourcesDigest();
  const header = `// chimera_lab graph editor: built by widgets/graph_editor/build.mjs; sources sha256 ${digest}`;
  const result = await esbuild.build({
    absWorkingDir: HERE,
    entryPoints: { graph_editor: "src/index.jsx" },
    bundle: true,
    format: "esm",
    target: "es2020",
    platform: "browser",
    minify: true,
    legalComments: "none",
    sourcemap: false,
    jsx: "automatic",
    charset: "utf8",
    loader: { ".js": "jsx" },
    define: { "process.env.NODE_ENV": '"production"', "import.meta.env": '{"MODE":"production"}' },
    banner: {
      js: header,
      css: `/* chimera_lab graph editor: built by widgets/graph_editor/build.mjs; sources sha256 ${digest} */`,
    },
    outdir: "out", // not written: write is false
    write: false,
    logLevel: "warning",
  });
  mkdirSync(outdir, { recursive: true });
  const written = [];
  for (const file of result.outputFiles) {
    const name = path.basename(file.path);
    if (name !== "graph_editor.js" && name !== "graph_editor.css") throw new Error(`unexpected output ${name}`);
    const text = file.text.endsWith("\n") ? file.text : file.text + "\n";
    writeFileSync(path.join(outdir, name), text);
    written.push(`${path.join(outdir, name)} (${Buffer.byteLength(text)} bytes)`);
  }
  if (written.length !== 2) throw new Error(`expected graph_editor.js and graph_editor.css, got ${written}`);
  console.log(`sources sha256 ${digest}\n${written.join("\n")}`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((exc) => {
    console.error(exc);
    process.exit(1);
  });
}
