"""Everything that turns a trained model into files CMSSW (or another consumer) loads.

- `deploy.fold`: inference copy with batch normalisation folded into the dense kernels;
- `deploy.onnx_export`: model.onnx from the frozen graph (tf2onnx), checked with ONNX Runtime;
- `deploy.lwtnn`: lwtnn_network.json for TrackLwtnnClassifier, and lwtnn's forward pass;
- `deploy.model_card`: model_card.json, the provenance of the exported files;
- `deploy.cost`: microseconds per track of a frozen graph, run as CMSSW runs it;
- `deploy.export`: all of the above for one run, as the deploy target asks.

The frozen graph itself is written by model_freeze.py. Import the submodules directly: this
package's __init__ imports nothing, so model_freeze can use deploy.fold without a cycle.
"""
