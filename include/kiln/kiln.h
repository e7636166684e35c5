// kiln: a tensor compiler and runtime. Include this for the whole public API.
#pragma once

#include "kiln/compiled_graph.h"
#include "kiln/dtype.h"
#include "kiln/error.h"
#include "kiln/graph.h"
#include "kiln/host_tensor.h"
#include "kiln/interpreter.h"
#include "kiln/kernel.h"
#include "kiln/runtime.h"
#include "kiln/shape.h"
#include "kiln/tensor.h"
