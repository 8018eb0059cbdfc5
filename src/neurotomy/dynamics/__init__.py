"""Layer-level analyses: modularity of layer graphs, representation similarity, unit entropy."""

from neurotomy.dynamics.modularity import ModularityCurve, knn_graph, modularity, modularity_curve
from neurotomy.dynamics.similarity import gbs, linear_cka, rbf_cka, similarity_matrix

__all__ = ["ModularityCurve", "gbs", "knn_graph", "linear_cka", "modularity", "modularity_curve", "rbf_cka",
           "similarity_matrix"]
