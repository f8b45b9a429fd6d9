// The C++ side of the ROOT writer: books the branches of the CMSSW layout in the given order and
// fills one entry per event straight from the flat numpy buffers (no Python loop per event).
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>
#include "TFile.h"
#include "TTree.h"

namespace make_ntuples {

struct Column {
  virtual ~Column() = default;
  virtual void load(Long64_t event) = 0;
};

// One value per event (event, lumi, run, bsp_*).
template <typename T>
struct Scalar : Column {
  const T* src;
  T value{};
  Scalar(TTree* tree, const char* name, const void* data, const int64_t*, const int64_t*)
      : src(static_cast<const T*>(data)) { tree->Branch(name, &value); }
  void load(Long64_t e) override { value = src[e]; }
};

// std::vector<T>: entries offsets[e] .. offsets[e+1] of the flat array.
template <typename T>
struct Vector : Column {
  const T* src;
  const int64_t* offsets;
  std::vector<T> value;
  Vector(TTree* tree, const char* name, const void* data, const int64_t* outer, const int64_t*)
      : src(static_cast<const T*>(data)), offsets(outer) { tree->Branch(name, &value); }
  void load(Long64_t e) override { value.assign(src + offsets[e], src + offsets[e + 1]); }
};

// std::vector<std::vector<T>>: per event its tracks, per track inner[i] .. inner[i+1].
template <typename T>
struct Nested : Column {
  const T* src;
  const int64_t* offsets;
  const int64_t* inner;
  std::vector<std::vector<T>> value;
  Nested(TTree* tree, const char* name, const void* data, const int64_t* outer, const int64_t* in)
      : src(static_cast<const T*>(data)), offsets(outer), inner(in) { tree->Branch(name, &value); }
  void load(Long64_t e) override {
    value.resize(offsets[e + 1] - offsets[e]);
    for (int64_t i = offsets[e]; i < offsets[e + 1]; ++i)
      value[i - offsets[e]].assign(src + inner[i], src + inner[i + 1]);
  }
};

template <template <typename> class C>
std::unique_ptr<Column> make(char type, TTree* tree, const std::string& name, const void* data,
                             const int64_t* outer, const int64_t* inner) {
  const char* n = name.c_str();
  switch (type) {
    case 'f': return std::make_unique<C<Float_t>>(tree, n, data, outer, inner);
    case 'I': return std::make_unique<C<UInt_t>>(tree, n, data, outer, inner);
    case 'i': return std::make_unique<C<Int_t>>(tree, n, data, outer, inner);
    case 'S': return std::make_unique<C<UShort_t>>(tree, n, data, outer, inner);
    case 's': return std::make_unique<C<Short_t>>(tree, n, data, outer, inner);
    case 'L': return std::make_unique<C<ULong64_t>>(tree, n, data, outer, inner);
  }
  throw std::runtime_error("make_ntuples: unknown element type for branch " + name);
}

// kinds[i] = shape ('e' scalar, 'v' vector, 'n' nested) + element type character above.
void write_tree(const std::string& path, int compression, Long64_t events,
                const std::vector<std::string>& names, const std::vector<std::string>& kinds,
                const uint64_t* data, const uint64_t* outer, const uint64_t* inner) {
  std::unique_ptr<TFile> file(TFile::Open(path.c_str(), "RECREATE", "", compression));
  if (!file || file->IsZombie()) throw std::runtime_error("make_ntuples: cannot create " + path);
  TDirectory* dir = file->mkdir("trackingNtuple");
  dir->cd();
  TTree* tree = new TTree("tree", "tree");  // owned by dir
  std::vector<std::unique_ptr<Column>> columns;
  for (size_t i = 0; i < names.size(); ++i) {
    auto* d = reinterpret_cast<const void*>(data[i]);
    auto* o = reinterpret_cast<const int64_t*>(outer[i]);
    auto* n = reinterpret_cast<const int64_t*>(inner[i]);
    const char shape = kinds[i][0], type = kinds[i][1];
    if (shape == 'e') columns.push_back(make<Scalar>(type, tree, names[i], d, o, n));
    else if (shape == 'v') columns.push_back(make<Vector>(type, tree, names[i], d, o, n));
    else columns.push_back(make<Nested>(type, tree, names[i], d, o, n));
  }
  for (Long64_t e = 0; e < events; ++e) {
    for (auto& c : columns) c->load(e);
    tree->Fill();
  }
  dir->cd();
  tree->Write();
  file->Close();
}

}  // namespace make_ntuples
