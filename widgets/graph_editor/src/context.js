// Callbacks the nodes need from the editor (a ref, so the context value never changes).
import { createContext } from "react";

export const EditorContext = createContext(null);
