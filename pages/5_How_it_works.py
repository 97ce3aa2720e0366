"""How it works: the paper's framework in seven formulas, each tied to what the other pages show."""

import streamlit as st

import appkit

appkit.run_from_entrypoint()

st.title("How it works")
st.markdown("Based on Jung & Oh, *Towards Better Explanations of Class Activation Mapping* (ICCV 2021). "
            "The equation numbers are the paper's.")

st.header("1 · Every CAM is a weighted sum of activation maps")
st.markdown("A convolutional layer $l$ turns the image $x$ into $K$ activation maps $A_1, \\dots, A_K$ (small grids, e.g. 7×7). "
            "A class activation map adds them up with one weight $\\alpha_k$ per map and keeps the positive part:")
st.latex(r"L^c_{\mathrm{CAM}}(A) = \mathrm{ReLU}\Big(\sum_{k=1}^{K} \alpha_k A_k\Big) \qquad (1)")
st.markdown("The maps A are the same for every method; **only the weights α differ**. That is why the "
            "*Explain an image* page shows, below the heatmaps, the bar chart of each method's $\\alpha$: click a bar to see that $A_k$.")

st.header("2 · Choosing α is explaining a simple model")
st.markdown("Think of each map as a switch: $a'_k = 1$ keeps $A_k$, $a'_k = 0$ replaces it with zeros. "
            "The paper asks for a *linear* explanation of the network's score $F^c$ in terms of these switches:")
st.latex(r"g_{\mathrm{CAM}}(a') = \alpha_0 + \sum_{k=1}^{K} \alpha_k\, a'_k \qquad (5)")
st.markdown("Here $F$ is the rest of the network after layer $l$ (the *tail*) and $F^c$ its score (logit) for class $c$.")

st.header("3 · The fair answer: SHAP values")
st.markdown("Shapley values share the score fairly among the maps: $\\alpha_k$ is map k's average extra contribution "
            "when it joins the other maps, over every possible order of joining:")
st.latex(r"\alpha_k^{\mathrm{shap}} = \sum_{a' \subseteq A'} \frac{(K-|a'|)!\,(|a'|-1)!}{K!}"
         r"\Big[F^c\big(h_A(a')\big) - F^c\big(h_A(a' \setminus k)\big)\Big] \qquad (6)")
st.markdown("With $K = 1280$ maps there are $1280!$ orders, so **SHAP-CAM**<sub>|Π|</sub> (Algorithm 1) averages over "
            "|Π| random orders only. The *SHAP-CAM vs LIFT-CAM* page shows how close each estimate gets to the SHAP "
            "values for the number of tail evaluations it spends.",
            unsafe_allow_html=True)

st.header("4 · LIFT-CAM: the same answer in one backward pass")
st.markdown("DeepLIFT compares the network on the real maps with the network on all-zero maps (the *reference*) "
            "and hands each activation its contribution C. LIFT-CAM sums them per map:")
st.latex(r"\alpha_k^{\mathrm{lift}} = C_{\Delta A_k \Delta F^c} = \sum_{(i,j)} C_{\Delta A_k(i,j)\, \Delta F^c} \qquad (7)")
st.markdown("The contributions always add up to the change of the score — the *local accuracy* that the "
            "Explain page checks with its Σα metric:")
st.latex(r"\sum_{k=1}^{K} \alpha_k^{\mathrm{lift}} = F^c(A) - F^c(\mathbf{0}) \qquad (8)")
st.markdown("When the tail is linear (global average pooling + one fully connected layer, as after the last layer "
            "of ResNet or EfficientNet), LIFT-CAM **equals** the SHAP values exactly; the sidebar says when this is "
            "the case. After an inner layer the tail is nonlinear and LIFT-CAM is an approximation — a very close one.")

st.header("5 · Ablation-CAM, seen the same way")
st.markdown("Ablation-CAM removes one map at a time and measures the relative drop of the score:")
st.latex(r"\alpha_k^{\mathrm{ablation}} = \frac{F^c\big(h_A(A')\big) - F^c\big(h_A(A' \setminus k)\big)}"
         r"{F^c\big(h_A(A')\big)} \qquad (9)")
st.markdown("That is one term of Eq. 6 (the last position in the order), so it approximates SHAP too — but its "
            "$\\alpha$ do not add up to $F^c(A) - F^c(0)$. Gradient methods (Grad-CAM, Grad-CAM++, XGrad-CAM) use the slope "
            "of $F^c$ at $A$ instead, which can saturate. On the SHAP-CAM page their cosine similarity to the SHAP "
            "values is drawn as points at their cost (the paper's Table 2).")

st.header("6 · LIME and KernelSHAP: fit the simple model to experiments")
st.markdown("**LIME** flips the switches at random (each map kept or zeroed, like tossing a coin), runs the tail "
            "on each try and writes down the score. Then it draws the best straight line through those results — "
            "Eq. 5 fitted by weighted least squares — giving more say to tries that keep most of the picture. "
            "The slopes of that line are the α of **LIME-CAM**; the authors use one try per map and a fit that "
            "sets unimportant maps to exactly zero (the lasso).")
st.markdown("**KernelSHAP** runs the same kind of experiment, but picks *which* switches to flip with a special "
            "rule (the Shapley kernel: mostly tries with very few or very many maps, each together with its "
            "opposite) and forces the α to add up to $F^c(A) - F^c(0)$. With every possible try it gives exactly "
            "the SHAP values of Eq. 6; with fewer tries, **KernelSHAP-CAM** gets closer the more tries it makes.")

st.header("7 · LRP-CAM: handing the score back, layer by layer")
st.markdown("Layer-wise relevance propagation starts with the score $F^c(A)$ at the output and hands it backwards. "
            "Each layer shares what it receives among its inputs by how much each one added to its output "
            "($x_p w_{qp}$ out of $z_q$); a ReLU passes its share on unchanged. LRP-CAM adds up what reaches each map:")
st.latex(r"R_p = \sum_q \frac{x_p\, w_{qp}}{z_q + \varepsilon\, \mathrm{sign}(z_q)}\, R_q, \qquad "
         r"\alpha_k^{\mathrm{lrp}} = \sum_{(i,j)} R\big(A_k(i,j)\big)")
st.markdown("A bias keeps its own share, so the $\\alpha$ add up to $F^c(A)$ only without biases; a larger ε (the "
            "method's option) lets weak neurons keep theirs too. On a linear tail LRP-CAM gives LIFT-CAM's map.")

st.header("8 · Is a map faithful?")
st.markdown("The *Faithfulness* page keeps only the highlighted pixels, $e = s(u(L)) \\circ x$ (Eq. 10), or removes them, "
            "and reads the model's probability: Increase in Confidence, Average Drop and Average Drop in Deletion "
            "(Eqs. 11–13), insertion and deletion curves, and the share of the map's energy inside the object's "
            "box (Eq. 14).")
st.latex(r"\mathrm{AD} = \frac{1}{N}\sum_{i=1}^{N} \frac{\max(0,\,Y_i^c - O_i^c)}{Y_i^c} \times 100 \qquad (12)")

st.divider()
st.caption("u(·): upsampling to the image size; s(·): min–max scaling to [0, 1]; ∘: pixel-wise product. "
           "Source code: `camlib/methods/` (one file per method), `camlib/metrics.py`.")
