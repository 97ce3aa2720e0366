"""VQA: explain the Shapes-VQA model's answer to a question about a scene, with every CAM method."""

import streamlit as st

import appkit
from appkit import vqa

appkit.run_from_entrypoint()
state = st.session_state

st.title("Explain a VQA answer")
st.markdown(
    "A small VQA model (Antol et al. style: a CNN and an LSTM in parallel, fused by an element-wise product) "
    "answers questions about generated scenes whose evidence is known exactly. Its answer is explained with "
    "the question **held fixed**: the maps A<sub>k</sub> of the image encoder feed the tail "
    "F(A; q) = classifier(image_head(A) ∘ q), with the question embedding q computed once (paper Sec. 4.4).",
    unsafe_allow_html=True)

try:
    with st.spinner("Loading the VQA model…"):
        model = appkit.get_model(vqa.MODEL)
except Exception as exc:  # missing or mismatched weights: a message, not a traceback
    st.error(f"The VQA model could not be loaded: {exc}")
    st.stop()
layer = model.default_layer
names = model.class_names

# -- the scene ---------------------------------------------------------------------------------------

if "vqa_seed" not in state:
    state["vqa_seed"] = vqa.EXAMPLE_SEEDS[0]


def set_seed(seed: int) -> None:
    state["vqa_seed"] = int(seed)


def new_random_scene() -> None:
    set_seed(vqa.random_seed())


scene_col, question_col = st.columns([1, 2], gap="large")
with question_col:
    st.subheader("Scene")
    a, b = st.columns([1, 1], vertical_alignment="bottom")
    a.button("New random scene", key="vqa_random", on_click=new_random_scene, icon=":material/casino:",
             help="A random held-out scene (seed ≥ 10⁹: never seen in training).")
    b.number_input("Seed", min_value=0, max_value=vqa.MAX_SEED, step=1, key="vqa_seed", persist_state="session",
                   help="Every scene is a pure function of its seed.")
    for col, (i, seed) in zip(st.columns(len(vqa.EXAMPLE_SEEDS)), enumerate(vqa.EXAMPLE_SEEDS)):
        col.button(f"Example {i + 1}", key=f"vqa_example_{i}", on_click=set_seed, args=(seed,), width="stretch",
                   type="primary" if state["vqa_seed"] == seed else "secondary")

seed = int(state["vqa_seed"])
scene, questions = vqa.scene(seed)
image = vqa.scene_pil(scene)
image_key = vqa.scene_key(seed)

# -- the question ------------------------------------------------------------------------------------

if state.get("vqa_question_seed") != seed:  # a new scene: its own questions
    state["vqa_question_seed"] = seed
    state.pop("vqa_question", None)

with question_col:
    st.subheader("Question")
    mode = st.segmented_control("Question", ["generated", "typed"], default="generated", required=True,
                                key="vqa_mode", label_visibility="collapsed", persist_state="session",
                                format_func=lambda m: "Pick a generated question" if m == "generated"
                                else "Type your own")
    if mode == "typed":
        typed = st.text_input("Your question", key="vqa_typed", max_chars=120, persist_state="session",
                              placeholder="what colour is the object left of the red square?")
        text, error = vqa.parse_question(model, typed)
        question = vqa.find_question(questions, text) if text else None
    else:
        families = {q.text: q.family for q in questions}
        text = st.selectbox("Question about this scene", list(families), key="vqa_question",
                            format_func=lambda t: f"[{families[t]}] {t}")
        error = None
        question = vqa.find_question(questions, text)

with scene_col:
    show_evidence = st.toggle("Show the evidence", key="vqa_evidence", value=True,
                              disabled=question is None or not question.has_evidence,
                              help="Outline of the objects that hold the answer (known exactly for generated "
                                   "questions; none for 'no' and '0' answers).")
    evidence = question.evidence_mask if show_evidence and question is not None and question.has_evidence else None
    st.image(appkit.inline(vqa.scene_view(scene.image, evidence), "PNG"), width="stretch",
             caption=f"seed {seed} · {len(scene.objects)} objects: {vqa.describe(scene)}")

if error:
    with question_col:
        if typed.strip():
            st.error(error)
        else:
            st.info("Type a question. " + error)
    st.stop()

# -- the answer --------------------------------------------------------------------------------------

probabilities = appkit.predictions(vqa.MODEL, image_key, image, question=text)
predicted = int(probabilities.argmax())
with question_col:
    st.subheader("Answer")
    a, b = st.columns(2)
    a.metric("Model's answer", names[predicted], help=f"probability {appkit.fmt_percent(probabilities[predicted])}")
    if question is not None:
        verdict = "correct" if names[predicted] == question.answer else "wrong"
        b.metric("True answer", question.answer, help=f"family: {question.family}; the model is {verdict}")
        st.caption(f"The model is **{verdict}**.")
    else:
        b.metric("True answer", "—", help="Known for the generated questions of this scene.")
    st.plotly_chart(appkit.probability_figure(appkit.top_classes(probabilities, names)), key="vqa_top5",
                    config={"displayModeBar": False})

    if state.get("vqa_target_for") != (seed, text):  # a new scene or question: back to the prediction
        state["vqa_target_for"] = (seed, text)
        state["vqa_target"] = appkit.PREDICTED
    choice = st.selectbox("Explain the answer", appkit.target_options(probabilities, names), key="vqa_target",
                          format_func=lambda o: appkit.target_label(o, probabilities, names, noun="answer"),
                          help="The answer whose score is explained: the prediction, or any other answer.")
    target = predicted if choice in (None, appkit.PREDICTED) else int(choice)

# -- controls ----------------------------------------------------------------------------------------

state.setdefault("vqa_methods", list(appkit.DEFAULT_METHODS))
methods = st.sidebar.pills("Methods", list(vqa.METHODS), selection_mode="multi", key="vqa_methods",
                           format_func=appkit.method_title, persist_state="session", help=appkit.methods_help())
methods = [m for m in vqa.METHODS if m in (methods or [])]
alpha = st.sidebar.slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05, key="vqa_alpha", persist_state="session")
top_k = st.sidebar.slider("Maps in the coefficient charts", 5, model.layer_info(layer).shape[0], 16, 1,
                          key="vqa_top_k", persist_state="session")
method_options = appkit.option_controls(methods, "vqa", initial={"permutations": 100})

# -- the maps ----------------------------------------------------------------------------------------

st.subheader(f"Why \"{names[target]}\"?")
st.caption(f"Layer {layer} ({'×'.join(map(str, model.layer_info(layer).shape))}), question held fixed: "
           f"“{text}”.")
if not methods:
    st.info("Choose at least one method in the sidebar.")
    st.stop()

svc = appkit.service()
jobs = appkit.plan_explanations(vqa.MODEL, image_key, image, appkit.ordered_for_compute(methods), layer, target,
                               method_options, question=text, with_activations=True)
maps_job = appkit.submit_activations(vqa.MODEL, image_key, image, layer, question=text)  # queued with the maps
cells = appkit.method_cells(methods)
for method, plan in jobs.items():
    if isinstance(plan, ValueError):
        cells[method].warning(str(plan))
    elif plan[0] is None:
        appkit.start_cell(cells[method], model, layer, method, method_options.get(method), plan[1], plan[2],
                          vqa.MODEL, f"vqa_start_{method}")

outline = question.evidence_mask if question is not None and question.has_evidence else None
results: dict[str, dict] = {}


def draw(method: str, job, cached: bool) -> None:
    cell = cells[method]
    if job.state is appkit.State.FAILED:
        cell.warning(job.error) if job.kept else cell.error(f"{appkit.method_title(method)} failed: {job.error}")
        return
    res = results[method] = job.result
    with cell.container(key=f"vqa_cam_{method}"):
        st.image(appkit.inline(vqa.heatmap_view(scene.image, res["saliency"], alpha, outline if show_evidence else None),
                               "PNG"), width="stretch")
        note = " · map is all zero (every α·A ≤ 0)" if res["constant"] else ""
        energy = vqa.evidence_energy(res["saliency"], outline)
        inside = "" if energy is None else f" · {appkit.fmt_percent(energy)} of the energy on the evidence"
        st.caption(f"{appkit.time_caption(job, cached)}{inside}{note}")


pending = {m: (plan[0], cells[m]) for m, plan in jobs.items() if not isinstance(plan, ValueError) and plan[0] is not None}
appkit.show_jobs(pending, draw, svc)

if outline is not None and results:
    st.caption(f"The evidence covers {appkit.fmt_percent(vqa.area_fraction(outline))} of the image: what a "
               "uniform map would put on it. The CAM grid is 8×8 (16-pixel cells), so every map spills over.")

if "liftcam" in results and results["liftcam"]["local_accuracy"] is not None:
    total, delta = results["liftcam"]["local_accuracy"]
    st.markdown("**LIFT-CAM local accuracy** (Eq. 8), question fixed: the coefficients add up to the change of the "
                "answer's logit between the real maps and all-zero maps, F<sup>c</sup>(A; q) − F<sup>c</sup>(0; q).",
                unsafe_allow_html=True)
    a, b, c = st.columns(3)
    a.metric("Σ α (LIFT-CAM)", appkit.fmt(total, 6))
    b.metric("F^c(A; q) − F^c(0; q)", appkit.fmt(delta, 6))
    c.metric("difference", appkit.fmt(abs(total - delta), 2))

# -- coefficients ------------------------------------------------------------------------------------

if results:
    st.subheader("Coefficients α: which activation maps matter")
    st.caption("Maps sorted by |α|. Click a bar (or pick a map beside it) to see that map over the scene.")
    maps = appkit.result_of(maps_job)
    shown = [m for m in methods if m in results]
    for tab, method in zip(st.tabs([appkit.method_title(m) for m in shown]), shown):
        coefficients = results[method]["coefficients"]
        choices = appkit.top_maps(coefficients, top_k)
        picker, chart_key = f"vqa_map_{method}", f"vqa_coef_{method}"
        appkit.sync_map_picker(picker, chart_key, choices, maps)
        with tab:
            chart, picked = st.columns([2, 1])
            chart.plotly_chart(appkit.coefficient_figure(coefficients, top_k, selected=state[picker]), key=chart_key,
                               on_select="rerun", selection_mode="points", config={"displayModeBar": False})
            with picked:
                k = st.selectbox("Activation map", choices, key=picker, format_func=lambda k: f"A{k}")
                a_k, flat = appkit.activation_map(maps, k)
                table = appkit.coefficient_table(coefficients)
                st.image(appkit.inline(vqa.activation_view(scene.image, a_k), "PNG"), width="stretch",
                         caption=f"A{k}: α = {appkit.fmt(table.alpha[k])}, "
                                 f"{appkit.fmt_percent(table.share[k], 2)} of Σ|α|"
                                 + (" (all zero on this scene)" if flat else ""))
