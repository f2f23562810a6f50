// Typeset the maths that pymdownx.arithmatex (generic mode) wraps in <span class="arithmatex"> / <div class="arithmatex">:
// \( … \) inline, \[ … \] displayed. Material's document$ fires on every page load, instant navigation included.
document$.subscribe(({ body }) => {
  for (const element of body.querySelectorAll(".arithmatex")) {
    renderMathInElement(element, {
      delimiters: [
        { left: "\\(", right: "\\)", display: false },
        { left: "\\[", right: "\\]", display: true },
      ],
      throwOnError: false,
    });
  }
});
