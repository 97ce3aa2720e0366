"""Faithfulness: does the map point at what the model actually uses? The paper's metrics on one image."""

import pandas as pd
import streamlit as st

import appkit

state = st.session_state
sel = appkit.selection()
model, layer, target, image = sel["model"], sel["layer"], sel["target"], sel["image"]
name = sel["model_name"]
svc = appkit.service()

st.title("Faithfulness")
st.markdown("Keep only what the map highlights, or remove it, and watch how sure the model stays about the "
            "class (paper Sec. 4.1–4.3). A faithful map keeps the model sure when only its region is kept, and "
            "makes it unsure when its region is removed.")
st.caption(f"{image.title} · {model.title} · layer {layer} · class {sel['target_name']}")

st.sidebar.divider()
methods = appkit.methods_in_menu()
method = st.sidebar.selectbox("Method", methods, index=methods.index("liftcam") if "liftcam" in methods else 0,
                              key="faith_method", format_func=appkit.method_title, persist_state="session")
steps = st.sidebar.select_slider("Insertion/deletion steps", [11, 21, 41], value=41, key="faith_steps",
                                 persist_state="session", help="41 steps: δ = 0, 0.025, …, 1 as in the paper.")

# -- the box for the pointing game ------------------------------------------------------------------
boxes = list(image.boxes)
if boxes:
    box_note = "the object's box from the sample's annotation"
else:
    width, height = image.size
    with st.sidebar.expander("Object box (for the pointing game)"):
        use_box = st.checkbox("I know where the object is", key=f"box_on_{image.key[:12]}", persist_state="session")
        st.caption(f"Pixels of the original image ({width}×{height}), inclusive corners.")
        c1, c2 = st.columns(2)
        x0 = c1.number_input("x min", 0, width - 1, 0, key=f"box_x0_{image.key[:12]}", persist_state="session")
        y0 = c2.number_input("y min", 0, height - 1, 0, key=f"box_y0_{image.key[:12]}", persist_state="session")
        x1 = c1.number_input("x max", 0, width - 1, width - 1, key=f"box_x1_{image.key[:12]}", persist_state="session")
        y1 = c2.number_input("y max", 0, height - 1, height - 1, key=f"box_y1_{image.key[:12]}", persist_state="session")
    box_note = "the box typed in the sidebar"
    if use_box:
        if x0 <= x1 and y0 <= y1:
            boxes = [(int(x0), int(y0), int(x1), int(y1))]
        else:
            st.sidebar.warning("The box needs x min ≤ x max and y min ≤ y max.")

# -- compute ------------------------------------------------------------------------------------------
try:
    job, key, seconds = appkit.plan_explanation(name, image.key, image.image, method, layer, target)
except ValueError as exc:
    st.warning(str(exc))
    st.stop()
if job is None:
    st.markdown(f"**{appkit.method_title(method)}** is not computed for this image yet.")
    appkit.start_cell(st.empty(), model, layer, method, {}, key, seconds, name, "faith_start")
    st.stop()
status = st.empty()
res = None


def got(_, finished, cached) -> None:
    global res
    res = finished


appkit.show_jobs({"map": (job, status)}, got, svc)
if res.state is appkit.State.FAILED:
    status.warning(res.error) if res.kept else status.error(f"{appkit.method_title(method)} failed: {res.error}")
    st.stop()
res = res.result
scores_job = appkit.submit_faithfulness(name, image.key, image.image, method, layer, target, steps, res["saliency"])
appkit.show_jobs({"scores": (scores_job, status)}, lambda *a: None, svc)
status.empty()
if scores_job.state is appkit.State.FAILED:
    st.error(f"The metrics failed: {scores_job.error}")
    st.stop()
scores = scores_job.result
model_boxes = image.with_boxes(boxes).boxes_at(*model.input_size)
epg = appkit.pointing_game(res["saliency"], model_boxes)
chance = appkit.box_area_share(model_boxes, *model.input_size)
title = appkit.method_title(method)
cls = sel["target_name"]

# -- explanation images (Eq. 10) -------------------------------------------------------------------------
e, e_inv = appkit.explanation_images(image.image, res["saliency"])
shown_boxes = image.with_boxes(boxes).boxes_at(image.image.height, image.image.width)
c1, c2, c3, c4 = st.columns(4)
with c1:
    st.image(appkit.inline(appkit.draw_boxes(image.image, shown_boxes)), width="stretch")
    st.markdown(f"**The photo**: the model is {appkit.fmt_percent(scores['Y'])} sure it shows *{cls}*.",
                help="Y = p(c | x), the model's probability for the class on the image x."
                     + (f" Green: {box_note}." if boxes else ""))
with c2:
    st.image(appkit.inline(appkit.overlay_image(image.image, res["saliency"], 0.5)), width="stretch")
    st.markdown(f"**{title}'s map**: red where it says the evidence is.",
                help="s(u(L)): the map L upsampled to the image (u) and scaled to [0, 1] (s).")
with c3:
    st.image(appkit.inline(e), width="stretch")
    st.markdown(f"**Only the map kept**: the model is {appkit.fmt_percent(scores['O'])} sure.",
                help="e = s(u(L)) ∘ x (Eq. 10): every pixel multiplied by the map's value there. "
                     "O = p(c | e).")
with c4:
    st.image(appkit.inline(e_inv), width="stretch")
    st.markdown(f"**The map removed**: the model is {appkit.fmt_percent(scores['D'])} sure.",
                help="e_inv = (1 − s(u(L))) ∘ x: the complement. D = p(c | e_inv).")

st.subheader("Scores for this image")
m = st.columns(3) + st.columns(3)  # two rows: the labels stay whole on a laptop
m[0].metric("More sure with only the map?", "yes" if scores["ic"] >= 0.5 else "no",
            help="Increase in Confidence (IC, Eq. 11): is p(c | e) > p(c | x)? Yes is better.")
m[1].metric("Drop when only the map is kept", appkit.fmt_percent(scores["ad"]),
            help="Average Drop (AD, Eq. 12): max(0, Y − O) / Y. Lower is better: the map holds the evidence.")
m[2].metric("Drop when the map is removed", appkit.fmt_percent(scores["add"]),
            help="Average Drop in Deletion (ADD, Eq. 13): (Y − D) / Y. Higher is better: without the map "
                 "the evidence is gone.")
m[3].metric("Insertion area", appkit.fmt(scores["ins_auc"], 3),
            help="Area under the insertion curve: put the pixels back, most salient first, from a black "
                 "image. Higher is better.")
m[4].metric("Deletion area", appkit.fmt(scores["del_auc"], 3),
            help="Area under the deletion curve: blacken the pixels, most salient first. Lower is better.")
m[5].metric("Map's energy in the box", appkit.fmt_percent(epg) if epg is not None else "no box",
            delta=None if chance is None or epg is None else f"{100 * (epg - chance):+.1f} points above an even map",
            delta_color="normal",
            help="Energy-based pointing game (Eq. 14): Σ of the map inside the box / Σ of the map. A map spread "
                 "evenly over the image scores the box's share of the image." )

# -- is the box a fair test? ------------------------------------------------------------------------------
if chance is not None:
    fair = chance <= 0.5
    words = (f"The box covers **{appkit.fmt_percent(chance)}** of the image, so a map spread evenly over the whole "
             f"image already puts {appkit.fmt_percent(chance)} of its energy inside it.")
    if fair:
        st.caption(words + " Compare the score with that.")
    else:
        suggestion = appkit.fairest_sample(name)
        st.warning(words + " That is no test: every map scores high here.", icon=":material/crop_free:")
        if suggestion is not None and suggestion.key != image.sample:
            def switch(key=suggestion.key) -> None:
                state["image"] = appkit.sample_image(key)
                state.pop("upload_result", None)

            share = appkit.box_area_share(appkit.sample_image(suggestion.key).boxes_at(*model.input_size),
                                          *model.input_size)
            st.button(f"Try “{suggestion.title}”: its box covers {appkit.fmt_percent(share)} of the image",
                      on_click=switch, icon=":material/swap_horiz:", key="faith_fair_sample")
    expected = appkit.sample_classes(image.sample)
    if expected and target not in expected:
        st.caption(f"The box marks {', '.join(model.class_names[c] for c in expected)}; the explained class "
                   f"*{cls}* is not among them, so its evidence may lie elsewhere.")

st.plotly_chart(appkit.insertion_deletion_figure(scores), key="insdel")
st.caption("Insertion: start from a black image and put back the most salient pixels first. Deletion: start from the "
           "image and blacken the most salient pixels first. The paper (Table 4) averages these areas over 1,000 images.")

# -- all methods ----------------------------------------------------------------------------------------
if st.toggle("Compare the methods chosen on the Explain page", key="faith_compare", persist_state="session",
             help="Runs the same metrics for each method; a method not computed yet is started from the "
                  "Explain page (its cost is shown there)."):
    rows, skipped = [], []
    status = st.empty()
    for other in state.get("methods") or appkit.DEFAULT_METHODS:
        try:
            job, _, _ = appkit.plan_explanation(name, image.key, image.image, other, layer, target)
        except ValueError as exc:
            skipped.append(f"{appkit.method_title(other)}: {exc}")
            continue
        if job is None:
            skipped.append(f"{appkit.method_title(other)}: not computed yet (start it on the Explain page)")
            continue
        appkit.show_jobs({other: (job, status)}, lambda *a: None, svc)
        if job.state is appkit.State.FAILED:
            skipped.append(f"{appkit.method_title(other)}: {job.error}")
            continue
        r = job.result
        s_job = appkit.submit_faithfulness(name, image.key, image.image, other, layer, target, steps, r["saliency"])
        appkit.show_jobs({other: (s_job, status)}, lambda *a: None, svc)
        if s_job.state is appkit.State.FAILED:
            skipped.append(f"{appkit.method_title(other)}: {s_job.error}")
            continue
        s = s_job.result
        other_epg = appkit.pointing_game(r["saliency"], model_boxes)
        rows.append({"method": appkit.method_title(other), "p(e)": s["O"], "p(e_inv)": s["D"],
                     "AD %": 100 * s["ad"], "ADD %": 100 * s["add"], "insertion AUC": s["ins_auc"],
                     "deletion AUC": s["del_auc"]} | ({} if other_epg is None else {"energy in box %": 100 * other_epg}))
    status.empty()
    for note in skipped:
        st.caption(note)
    if rows:
        st.dataframe(pd.DataFrame(rows).set_index("method"), column_config={
            c: st.column_config.NumberColumn(format="%.3f") for c in ("p(e)", "p(e_inv)", "insertion AUC", "deletion AUC")
        } | {c: st.column_config.NumberColumn(format="%.1f") for c in ("AD %", "ADD %", "energy in box %")})
        st.caption("One image is an anecdote: the paper's tables average over 1,000 images (`python -m camlib.bench`).")
